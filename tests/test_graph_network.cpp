// GraphNetwork (nn/model/graph_network.h), the engine that runs model descriptions: a user
// description with a residual block and a depthwise conv passes the whole-network gradient
// check (and the check catches a dropped shortcut gradient there too); the built-in models
// give the logits and parameter gradients the hand-written classes they replaced gave.
#include <filesystem>
#include <map>

#include "net_gradcheck.h"
#include "nn/model/graph_network.h"
#include "nn/model/model_builders.h"
#include "nn/safetensors.h"
#include "nn/ops/pool.h"
#include "nn/ops/relu.h"

using namespace vkqat;
using namespace gradcheck;
using nlohmann::json;

namespace {

// 8x8x1 images, 10 classes: stem, one residual block with a depthwise 3x3 and a 1x1 conv,
// a 2x2 max pool, a flatten after the global pool. Taps: the stem's BN and the sum.
nn::ModelDescription user_description() {
  return nn::parse_model_description(json::parse(R"({
    "input": {"channels": 1, "height": 8, "width": 8}, "classes": 10,
    "layers": [
      {"name": "conv1", "op": "conv", "out": 4, "kernel": 3, "padding": 1},
      {"name": "bn1", "op": "batchnorm"},
      {"name": "conv1.act", "op": "relu"},
      {"name": "layer1.0.conv1", "op": "conv", "out": 4, "kernel": 3, "padding": 1, "groups": 4},
      {"name": "layer1.0.bn1", "op": "batchnorm"},
      {"name": "layer1.0.act1", "op": "relu"},
      {"name": "layer1.0.conv2", "op": "conv", "out": 4, "kernel": 1},
      {"name": "layer1.0.bn2", "op": "batchnorm"},
      {"name": "layer1.0", "op": "add", "inputs": ["layer1.0.bn2", "conv1.act"]},
      {"name": "layer1.0.act2", "op": "relu"},
      {"name": "pool", "op": "maxpool", "kernel": 2},
      {"name": "avgpool", "op": "gavgpool"},
      {"name": "flatten", "op": "flatten"},
      {"name": "fc", "op": "linear", "out": 10}
    ],
    "taps": ["bn1", "layer1.0"]})"),
                                     "user.json");
}

std::unique_ptr<nn::Network> user_net() {
  const nn::ModelDescription d = user_description();
  nn::ModelConfig mc;
  mc.model_file = "user.json";
  mc.in_channels = 1, mc.height = 8, mc.width_px = 8, mc.classes = 10;
  return std::make_unique<nn::GraphNetwork>(test::ctx(), d, mc, GradCheckNet::kBatch);
}

// torchvision's stem and MobileNet's pieces at 8x8x1: conv -> bn -> relu6 -> max pool 3x3/s2/p1
// -> depthwise -> bn -> relu6 -> 1x1 conv -> bn -> add (the pool's output as shortcut) ->
// global pool -> dropout -> linear. Taps (aux): the stem's ReLU6 and the sum.
nn::ModelDescription mobile_description() {
  return nn::parse_model_description(json::parse(R"({
    "input": {"channels": 1, "height": 8, "width": 8}, "classes": 10,
    "layers": [
      {"name": "conv1", "op": "conv", "out": 4, "kernel": 3, "padding": 1},
      {"name": "bn1", "op": "batchnorm"},
      {"name": "conv1.act", "op": "relu6"},
      {"name": "maxpool", "op": "maxpool", "kernel": 3, "stride": 2, "padding": 1},
      {"name": "layer1.0.conv1", "op": "conv", "out": 4, "kernel": 3, "padding": 1, "groups": 4},
      {"name": "layer1.0.bn1", "op": "batchnorm"},
      {"name": "layer1.0.act1", "op": "relu6"},
      {"name": "layer1.0.conv2", "op": "conv", "out": 4, "kernel": 1},
      {"name": "layer1.0.bn2", "op": "batchnorm"},
      {"name": "layer1.0", "op": "add", "inputs": ["layer1.0.bn2", "maxpool"]},
      {"name": "avgpool", "op": "gavgpool"},
      {"name": "dropout", "op": "dropout", "p": 0.3},
      {"name": "fc", "op": "linear", "out": 10}
    ],
    "taps": ["conv1.act", "layer1.0"]})"),
                                     "mobile.json");
}

// bn1's gamma at 3: about a tenth of the stem's values pass 6, so ReLU6's upper clamp (and
// ties at 6 in the max pool's windows) are on the checked path, not only the clamp at 0.
void widen_stem(nn::Network& n) {
  for (nn::Parameter* p : n.parameters())
    if (p->name == "bn1.weight") p->value.upload(std::vector<float>(size_t(p->value.numel()), 3.f));
}

}  // namespace

TEST_CASE("graph network gradient check: relu6, max pool 3x3/s2/p1, depthwise, residual add, dropout" *
          doctest::test_suite("net-gradcheck")) {
  for (bool with_aux : {false, true}) {
    CAPTURE(with_aux);
    GradCheckNet g(graph_net(mobile_description()), with_aux, widen_stem);
    expect_gradients_match(g);
  }
}

TEST_CASE("graph network quantized gradient check: PACT / CG-PACT replacing ReLU6, SAT on the FC, dropout" *
          doctest::test_suite("net-gradcheck")) {
  for (const QuantCheck& q : {QuantCheck{"dorefa", "cg-pact", true}, QuantCheck{"dorefa", "pact", false}})
    for (bool with_aux : {false, true}) {
      CAPTURE(q.str());
      CAPTURE(with_aux);
      GradCheckNet g(graph_net(mobile_description()), with_aux, [&](nn::Network& n) { quantize_for_check(n, q); });
      calibrate_quantizers(g, q);
      int alphas = 0;
      for (nn::Parameter* p : g.parameters()) alphas += p->name.find(".alpha") != std::string::npos;
      CHECK(alphas == 3);  // conv1.act, layer1.0.act1 (the relu6s), fc.act
      expect_gradients_match(g);
    }
}

TEST_CASE("graph network: relu6, the general max pool and dropout in eval mode equal a CPU computation") {
  // input -> relu6 -> max pool 3x3/s2/p1 -> global pool -> dropout (identity in eval) -> linear,
  // on images in [-8, 8] so that ReLU6 clamps at both ends; odd 7x9 so that the pool's
  // padding and floor show.
  const nn::ModelDescription d = nn::parse_model_description(json::parse(R"({
    "input": {"channels": 2, "height": 7, "width": 9}, "classes": 3,
    "layers": [
      {"name": "act", "op": "relu6"},
      {"name": "pool", "op": "maxpool", "kernel": 3, "stride": 2, "padding": 1},
      {"name": "avgpool", "op": "gavgpool"},
      {"name": "drop", "op": "dropout", "p": 0.5},
      {"name": "fc", "op": "linear", "out": 3}
    ]})"),
                                                                   "eval.json");
  const int batch = 3;
  auto net = graph_net(d, batch);
  net->init(3);
  const std::vector<float> x = test::random_vector(size_t(net->input().numel()), 21, -8.f, 8.f);
  net->input().upload(x);
  Recording rec(test::ctx());
  net->forward(rec, /*train=*/false);
  rec.finish();
  rec.run();
  nn::Pool2dShape ps;
  ps.n = batch, ps.c = 2, ps.h = 7, ps.w = 9, ps.k = 3, ps.stride = 2, ps.pad = 1;
  const std::vector<float> pooled = nn::ref::maxpool2d_forward(ps, nn::ref::relu6_forward(x));
  const std::vector<float> mean = nn::ref::global_avg_pool_forward(pooled, {batch, 2, ps.out_h(), ps.out_w()});
  std::vector<float> w, b;
  for (nn::Parameter* p : net->parameters()) (p->name == "fc.weight" ? w : b) = p->value.download();
  REQUIRE(w.size() == 6);
  std::vector<float> want(size_t(batch) * 3);
  for (int n = 0; n < batch; ++n)
    for (int o = 0; o < 3; ++o) {
      double acc = b[size_t(o)];
      for (int c = 0; c < 2; ++c) acc += double(w[size_t(o * 2 + c)]) * mean[size_t(n * 2 + c)];
      want[size_t(n * 3 + o)] = float(acc);
    }
  test::check_close(net->logits().download(), want, 1e-5, 1e-5, "logits");
}

TEST_CASE("graph network dropout: one mask per step counter value, a new one after advance_step, set_step replays") {
  auto net = graph_net(mobile_description());
  net->init(7);
  net->input().upload(test::random_vector(size_t(net->input().numel()), 11, -2.f, 2.f));
  Recording fwd(test::ctx());
  net->forward(fwd, /*train=*/true);
  fwd.finish();
  Recording advance(test::ctx());
  net->advance_step(advance);
  advance.finish();
  auto logits = [&] {
    fwd.run();
    return net->logits().download();
  };
  const std::vector<float> step0 = logits();
  CHECK(logits() == step0);  // replaying without advancing: the same mask
  advance.run();
  const std::vector<float> step1 = logits();
  CHECK(step1 != step0);
  net->set_step(0);
  CHECK(logits() == step0);
  net->set_step(1);
  CHECK(logits() == step1);
  // Another init seed: other masks at the same step.
  auto other = graph_net(mobile_description());
  other->init(8);
  for (size_t i = 0; i < net->state().size(); ++i) other->state()[i].second->upload(net->state()[i].second->download());
  other->input().upload(net->input().download());
  Recording fwd2(test::ctx());
  other->forward(fwd2, true);
  fwd2.finish();
  fwd2.run();
  CHECK(other->logits().download() != step1);
}

TEST_CASE("graph network gradient check: a user description with a residual block and a depthwise conv" *
          doctest::test_suite("net-gradcheck")) {
  for (bool with_aux : {false, true}) {
    CAPTURE(with_aux);
    GradCheckNet g(user_net(), with_aux);
    expect_gradients_match(g);
  }
}

TEST_CASE("graph network gradient check can fail: a dropped shortcut gradient is caught" *
          doctest::test_suite("net-gradcheck")) {
  for (bool with_aux : {false, true}) {
    CAPTURE(with_aux);
    GradCheckNet g(user_net(), with_aux, [](nn::Network& n) {
      dynamic_cast<nn::GraphNetwork&>(n).drop_add_input_grad_for_test("layer1.0", 1);
    });
    int checked = 0;
    const auto bad = check_gradients(g, &checked);
    bool stem_caught = false;
    for (const Mismatch& m : bad) stem_caught = stem_caught || m.param.rfind("conv1.", 0) == 0 || m.param.rfind("bn1.", 0) == 0;
    CHECK(stem_caught);
    for (const Mismatch& m : bad) CHECK(m.param.rfind("fc.", 0) != 0);  // after the block: untouched
  }
}

namespace {

struct StepResult {
  std::vector<float> logits;
  std::map<std::string, std::vector<float>> grads;
};

// One training step's forward and backward (with the aux module if asked) of `net`, weights
// taken from `weights` when given, on fixed random images.
StepResult train_step(nn::Network& net, const quant::QuantConfig* q, bool with_aux,
                      const std::map<std::string, std::vector<float>>* weights) {
  Context& ctx = test::ctx();
  net.init(7);
  if (weights)
    for (const auto& [name, t] : net.state()) {
      REQUIRE_MESSAGE(weights->count(name), name);
      t->upload(weights->at(name));
    }
  if (q) net.apply_quant_policy(*quant::make_quant_policy(*q));
  std::unique_ptr<nn::AuxiliaryHead> aux;
  if (with_aux) {
    aux = quant::quant_plugins().aux(ctx, net);
    aux->init(7);
  }
  const int batch = net.batch();
  nn::Tensor labels(ctx, {batch}, nn::DType::U32), loss(ctx, {1}, nn::DType::F32, MemoryKind::Host),
      correct(ctx, {1}, nn::DType::U32, MemoryKind::Host), aux_loss(ctx, {1}, nn::DType::F32, MemoryKind::Host),
      aux_correct(ctx, {1}, nn::DType::U32, MemoryKind::Host);
  net.input().upload(test::random_vector(size_t(net.input().numel()), 11, -2.f, 2.f));
  std::vector<uint32_t> y(static_cast<size_t>(batch), 0u);
  for (int i = 0; i < batch; ++i) y[size_t(i)] = uint32_t((i * 7) % net.config().classes);
  ctx.upload(labels.view(), y.data(), y.size() * 4);
  Recording rec(ctx);
  net.forward(rec, true);
  if (aux) aux->forward(rec, true);
  nn::cross_entropy(rec, net.logits(), labels, loss, correct, &net.d_logits());
  if (aux) {
    nn::cross_entropy(rec, aux->logits(), labels, aux_loss, aux_correct, &aux->d_logits(), 0.5f);
    aux->backward(rec);
  }
  net.backward(rec);
  rec.finish();
  rec.run();
  StepResult r;
  r.logits = net.logits().download();
  for (nn::Parameter* p : net.parameters()) r.grads[p->name] = p->grad.download();
  return r;
}

double max_abs(const std::vector<float>& v) {
  double m = 0;
  for (float x : v) m = std::max(m, double(std::fabs(x)));
  return m;
}

}  // namespace

// tests/data/hand-written/hand_steps.safetensors: one training step's logits and parameter
// gradients as the hand-written classes (the built-in models before they became descriptions)
// computed them, with the weights they started from, at width 2, 12x12x3 images, batch 4.
TEST_CASE("the built-in models on GraphNetwork give the logits and gradients the hand-written classes gave") {
  const char* data = std::getenv("VKQAT_TEST_DATA");
  REQUIRE(data);
  const nn::SafeTensors stored =
      nn::read_safetensors((std::filesystem::path(data) / "hand-written" / "hand_steps.safetensors").string());
  quant::QuantConfig w4a4;  // CG-PACT activations (PACT in BN's passes), DoReFa weights
  w4a4.wbits = 4, w4a4.abits = 4;
  struct Case {
    std::string model;
    bool quantized, aux;
  };
  for (const Case& c : {Case{"resnet20", false, false}, Case{"resnet20", true, false}, Case{"resnet20", true, true},
                        Case{"resnet20", false, true}, Case{"preact-resnet20", false, false},
                        Case{"preact-resnet20", true, true}, Case{"plain-cnn", false, false}}) {
    CAPTURE(c.model);
    CAPTURE(c.quantized);
    CAPTURE(c.aux);
    nn::ModelConfig mc;
    mc.name = c.model;
    mc.width = 2;
    mc.in_channels = 3, mc.height = 12, mc.width_px = 12, mc.classes = 10;
    const std::string key = c.model + (c.quantized ? ".w4a4" : ".fp32") + (c.aux ? ".aux" : "");
    std::map<std::string, std::vector<float>> weights, want_grads;
    for (const auto& [name, t] : stored.tensors) {
      if (name.rfind(c.model + "/state/", 0) == 0) weights[name.substr(c.model.size() + 7)] = stored.get_f32(name);
      if (name.rfind(key + "/grad/", 0) == 0) want_grads[name.substr(key.size() + 6)] = stored.get_f32(name);
    }
    REQUIRE(!weights.empty());
    auto graph = nn::build_network(test::ctx(), mc, 4);
    const StepResult got = train_step(*graph, c.quantized ? &w4a4 : nullptr, c.aux, &weights);
    // The same kernels on the same values: equal up to the order in which a tensor's several
    // gradients are summed (float addition is not associative: preact-resnet20 W4A4 + aux
    // differed by 1.7e-5 in one PACT alpha), so 1e-4 of each tensor's largest value; a lost or
    // doubled path moves gradients by far more.
    constexpr double kTol = 1e-4;
    const std::vector<float> want_logits = stored.get_f32(key + "/logits");
    REQUIRE(got.logits.size() == want_logits.size());
    const double ls = max_abs(want_logits);
    for (size_t i = 0; i < want_logits.size(); ++i) CHECK(std::fabs(got.logits[i] - want_logits[i]) <= kTol * ls);
    REQUIRE(got.grads.size() == want_grads.size());
    for (const auto& [name, g] : want_grads) {
      CAPTURE(name);
      REQUIRE(got.grads.count(name));
      const std::vector<float>& h = got.grads.at(name);
      REQUIRE(h.size() == g.size());
      const double scale = std::max(max_abs(g), 1e-12);
      double worst = 0;
      for (size_t i = 0; i < g.size(); ++i) worst = std::max(worst, std::fabs(double(h[i]) - g[i]) / scale);
      CHECK(worst <= kTol);
    }
  }
}

// GraphNetwork's buffer reuse (nn/model/graph_network_buffers.cpp): activation and gradient
// buffers share one pool where their lifetimes in the step do not overlap. A buffer
// overwritten while something still reads it changes a result (validation sees no hazard:
// the barriers are right, the lifetimes are what would be wrong), so the pooled net must give
// bit-identical logits, aux logits and parameter gradients to one with every buffer its own,
// over several replays of the trainer's recorded step (forward, aux, losses, aux backward,
// backward, SGD) on new images, each followed by a replay of an evaluation forward. A net
// built for forward only gives the training net's evaluation logits from less memory.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>

#include "net_gradcheck.h"
#include "nn/model/graph_network.h"
#include "nn/model/model_builders.h"
#include "nn/train/trainer.h"

using namespace vkqat;

namespace {

constexpr int kBatch = 4;
constexpr int kSteps = 3;

struct ModelCase {
  std::string label;
  nn::ModelConfig mc;
  nn::ModelDescription d;
};

ModelCase builtin(const std::string& name, int channels, int side) {
  ModelCase m;
  m.label = name;
  m.mc.name = name;
  m.mc.width = 4;
  m.mc.width_mult = 0.25, m.mc.stem = "cifar";  // mobilenet-v2
  m.mc.in_channels = channels, m.mc.height = side, m.mc.width_px = side, m.mc.classes = 10;
  m.d = nn::describe_model(m.mc);
  return m;
}

ModelCase user_file() {  // a residual block with a depthwise conv, and taps of its own
  const char* data = std::getenv("VKQAT_TEST_DATA");
  REQUIRE(data);
  ModelCase m;
  m.label = (std::filesystem::path(data) / ".." / ".." / "models" / "tiny-dw-residual.json").lexically_normal().string();
  m.d = nn::load_model_description(m.label);
  m.mc.model_file = m.label;
  m.mc.in_channels = 1, m.mc.height = 28, m.mc.width_px = 28, m.mc.classes = 10;
  return m;
}

struct QuantCase {
  std::string label;
  bool quantized = false, aux = false;
  quant::QuantConfig q;
};

std::vector<QuantCase> quant_cases() {
  QuantCase fp32{"fp32", false, false, {}}, fp32_aux{"fp32 + aux", false, true, {}};
  QuantCase cgpact{"w4a4 cg-pact + sat + aux", true, true, {}};
  cgpact.q.wbits = cgpact.q.abits = 4, cgpact.q.sat = true;
  QuantCase lsq{"w4a4 lsq + aux", true, true, {}};
  lsq.q.apply_preset("lsq", "", "");
  lsq.q.wbits = lsq.q.abits = 4;
  return {fp32, fp32_aux, cgpact, lsq};
}

std::vector<float> images(nn::Network& net, int step) {
  return test::random_vector(size_t(net.input().numel()), 11 + uint32_t(step + 1), -2.f, 2.f);
}

struct Built {
  std::unique_ptr<nn::GraphNetwork> net;
  std::unique_ptr<nn::AuxiliaryHead> aux;
  uint64_t device_bytes = 0;  // the allocator's bytes in use for both
};

Built build(const ModelCase& m, const QuantCase& c, bool reuse, bool forward_only) {
  Context& ctx = test::ctx();
  const uint64_t before = ctx.allocator().stats().used_bytes;
  Built b;
  nn::ModelConfig mc = m.mc;
  mc.forward_only = forward_only;
  b.net = std::make_unique<nn::GraphNetwork>(ctx, m.d, mc, kBatch, reuse);
  b.net->init(7);
  if (c.quantized) b.net->apply_quant_policy(*quant::make_quant_policy(c.q));
  if (c.aux) {
    b.aux = quant::quant_plugins().aux(ctx, *b.net);
    b.aux->init(7);
  }
  b.device_bytes = ctx.allocator().stats().used_bytes - before;
  if (!forward_only) {  // LSQ's steps from a first batch, as the trainer does (its own forward)
    std::vector<nn::ActQuantizer*> wants;
    for (nn::ActQuantizer* q : b.net->act_quantizers())
      if (q->wants_data_init()) q->set_data_init(true), wants.push_back(q);
    if (!wants.empty()) {
      b.net->input().upload(images(*b.net, -1));
      Recording rec(ctx);
      b.net->forward(rec, true);
      rec.finish();
      rec.run();
      for (nn::ActQuantizer* q : wants) q->set_data_init(false);
    }
  }
  return b;
}

struct Replays {
  std::vector<std::vector<float>> logits, aux_logits, eval_logits, eval_aux_logits;
  std::vector<std::map<std::string, std::vector<float>>> grads;
  std::map<std::string, std::vector<float>> state;  // after the last step: for the forward-only net
};

Replays replay(Built& b) {
  Context& ctx = test::ctx();
  nn::Network& net = *b.net;
  nn::Tensor labels(ctx, {kBatch}, nn::DType::U32), step_params(ctx, {4}, nn::DType::F32, MemoryKind::Host),
      loss(ctx, {1}, nn::DType::F32, MemoryKind::Host), correct(ctx, {1}, nn::DType::U32, MemoryKind::Host),
      aux_loss(ctx, {1}, nn::DType::F32, MemoryKind::Host), aux_correct(ctx, {1}, nn::DType::U32, MemoryKind::Host);
  std::vector<uint32_t> y(static_cast<size_t>(kBatch));
  for (int i = 0; i < kBatch; ++i) y[size_t(i)] = uint32_t((i * 7) % net.config().classes);
  ctx.upload(labels.view(), y.data(), y.size() * 4);
  // lr: small enough that no replay diverges. At 0.05 the quantized MobileNetV2's gradients
  // were NaN from the second replay (NaN bits equal NaN bits: the comparison saw nothing
  // there); `vkqat train` at that lr and batch shows why: its clip levels go from 8 to 1e14 in
  // five steps, driven by the 1280-wide FC's first step (README, "Quantized MobileNetV2").
  // MobileNetV2 runs at 18x18 (last stage 2x2), not 12x12: there its last stages are 1x1, each
  // batch norm normalizes over the 4 images, and a near-constant channel amplifies by
  // gamma / sqrt(eps); LSQ + aux at 12x12 had a stem gradient of 1e3 at the first replay and
  // 1e31 (then inf, NaN) at the second, at lr 0.005.
  step_params.upload({0.005f, 0.f, 0.f, 0.f});
  nn::TrainConfig cfg;
  cfg.aux = b.aux != nullptr;
  Recording step(ctx), eval(ctx);
  nn::record_training_step(step, net, b.aux.get(), cfg,
                           nn::StepBuffers{&labels, &step_params, &loss, &correct, &aux_loss, &aux_correct});
  step.finish();
  net.forward(eval, false);
  if (b.aux) b.aux->forward(eval, false);
  eval.finish();
  Replays r;
  for (int s = 0; s < kSteps; ++s) {
    net.input().upload(images(net, s));
    step.run();
    r.logits.push_back(net.logits().download());
    if (b.aux) r.aux_logits.push_back(b.aux->logits().download());
    std::map<std::string, std::vector<float>> g;
    for (nn::Parameter* p : nn::trained_parameters(net, b.aux.get())) g[p->name] = p->grad.download();
    r.grads.push_back(std::move(g));
    eval.run();
    r.eval_logits.push_back(net.logits().download());
    if (b.aux) r.eval_aux_logits.push_back(b.aux->logits().download());
  }
  for (const auto& [name, t] : net.state()) r.state[name] = t->download();
  if (b.aux)
    for (const auto& [name, t] : b.aux->state()) r.state[name] = t->download();
  return r;
}

// The same bits (a NaN equals itself: float == would fail on it).
bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}
bool same_bits(const std::vector<std::vector<float>>& a, const std::vector<std::vector<float>>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (!same_bits(a[i], b[i])) return false;
  return true;
}

bool all_finite(const std::vector<float>& v) {
  return std::all_of(v.begin(), v.end(), [](float x) { return std::isfinite(x); });
}

// Whether every replay's logits and gradients are the same bits.
bool identical(const Replays& a, const Replays& b) {
  if (a.grads.size() != b.grads.size()) return false;
  for (size_t s = 0; s < a.grads.size(); ++s)
    for (const auto& [name, g] : a.grads[s])
      if (!b.grads[s].count(name) || !same_bits(b.grads[s].at(name), g)) return false;
  return same_bits(a.logits, b.logits) && same_bits(a.aux_logits, b.aux_logits) &&
         same_bits(a.eval_logits, b.eval_logits) && same_bits(a.eval_aux_logits, b.eval_aux_logits);
}

void check_identical(const Replays& got, const Replays& want) {
  REQUIRE(got.grads.size() == want.grads.size());
  for (size_t s = 0; s < want.grads.size(); ++s) {
    CAPTURE(s);
    CHECK(same_bits(got.logits[s], want.logits[s]));
    CHECK(same_bits(got.eval_logits[s], want.eval_logits[s]));
    if (!want.aux_logits.empty()) {
      CHECK(same_bits(got.aux_logits[s], want.aux_logits[s]));
      CHECK(same_bits(got.eval_aux_logits[s], want.eval_aux_logits[s]));
    }
    REQUIRE(got.grads[s].size() == want.grads[s].size());
    for (const auto& [name, g] : want.grads[s]) {
      CAPTURE(name);
      REQUIRE(got.grads[s].count(name));
      CHECK(same_bits(got.grads[s].at(name), g));
    }
  }
}

}  // namespace

TEST_CASE("buffer reuse: logits and every gradient bit-identical to separate buffers over replayed steps") {
  const std::vector<ModelCase> models{builtin("resnet20", 3, 12), builtin("preact-resnet20", 3, 12),
                                      builtin("mobilenet-v2", 1, 18), user_file()};
  for (const ModelCase& m : models)
    for (const QuantCase& c : quant_cases()) {
      CAPTURE(m.label);
      CAPTURE(c.label);
      Built separate = build(m, c, /*reuse=*/false, false);
      const Replays want = replay(separate);
      for (size_t s = 0; s < want.grads.size(); ++s) {  // the comparison below needs numbers to compare
        CAPTURE(s);
        CHECK(all_finite(want.logits[s]));
        for (const auto& [name, g] : want.grads[s]) CHECK_MESSAGE(all_finite(g), name);
      }
      Built pooled = build(m, c, /*reuse=*/true, false);
      const Replays got = replay(pooled);
      check_identical(got, want);
      CHECK(pooled.device_bytes < separate.device_bytes);

      // Forward only: the same weights give the training net's evaluation logits (the aux
      // module's too: it reads the taps after the net's forward), from less memory still.
      Built fwd = build(m, c, /*reuse=*/true, /*forward_only=*/true);
      CHECK(fwd.device_bytes < pooled.device_bytes);
      for (const auto& [name, t] : fwd.net->state()) {
        CAPTURE(name);
        REQUIRE(want.state.count(name));
        t->upload(want.state.at(name));
      }
      if (fwd.aux)
        for (const auto& [name, t] : fwd.aux->state()) t->upload(want.state.at(name));
      Recording eval(test::ctx());
      fwd.net->forward(eval, false);
      if (fwd.aux) fwd.aux->forward(eval, false);
      eval.finish();
      fwd.net->input().upload(images(*fwd.net, kSteps - 1));
      eval.run();
      CHECK(same_bits(fwd.net->logits().download(), want.eval_logits.back()));
      if (fwd.aux) CHECK(same_bits(fwd.aux->logits().download(), want.eval_aux_logits.back()));
      Recording rec(test::ctx());
      CHECK_THROWS_WITH(fwd.net->backward(rec), doctest::Contains("forward only"));
      CHECK_THROWS_WITH(fwd.net->forward(rec, true), doctest::Contains("forward only"));
    }
}

TEST_CASE("buffer reuse: the replay comparison catches lifetimes cut short") {
  // The check above is only as good as its power to see a buffer reused too early: with every
  // lifetime cut to its first step, buffers still read are overwritten and results change.
  const ModelCase m = builtin("resnet20", 3, 12);
  const QuantCase c = quant_cases()[2];  // W4A4 CG-PACT + SAT + aux
  Built separate = build(m, c, false, false);
  const Replays want = replay(separate);
  Built broken = build(m, c, true, false);
  broken.net->cut_lifetimes_short_for_test();  // the aux module's taps point at the moved buffers
  CHECK_FALSE(identical(replay(broken), want));
}

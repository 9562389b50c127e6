// MobileNetV2's linear bottlenecks quantized (GraphNetwork::apply_quant_policy): a batchnorm
// or add that feeds a conv / linear with no ReLU between gets a signed activation quantizer
// "LAYER.act" (src/quant/pact.h's symmetric PACT); its consumers read the quantized value,
// the aux taps the value before it. Whole-network gradient check through those sites (with
// a smooth stand-in quantizer, y = 2x, so finite differences mean something and reading the
// wrong buffer shows), the names chosen on a description and on torchvision's MobileNetV2,
// the refusal of activation quantizers with no signed form, and LSQ's signed range there.
#include <set>

#include "net_gradcheck.h"
#include "nn/model/graph_network.h"
#include "nn/model/model_builders.h"
#include "nn/ops/add.h"

using namespace vkqat;
using namespace gradcheck;
using nlohmann::json;

namespace {

// 8x8x1 images: stem, an inverted residual whose projection BN feeds an add (the sum "b1"
// is read by b2's 1x1 conv: a site), b2's BN read through a max pool by a conv (a site),
// then a ReLU'd conv and the classifier. Taps: both sites (tapped BN and tapped add).
nn::ModelDescription bottleneck_description() {
  return nn::parse_model_description(json::parse(R"({
    "input": {"channels": 1, "height": 8, "width": 8}, "classes": 10,
    "layers": [
      {"name": "conv1", "op": "conv", "out": 4, "kernel": 3, "padding": 1},
      {"name": "bn1", "op": "batchnorm"},
      {"name": "conv1.act", "op": "relu6"},
      {"name": "b1.expand", "op": "conv", "out": 8, "kernel": 1},
      {"name": "b1.expand.bn", "op": "batchnorm"},
      {"name": "b1.expand.act", "op": "relu6"},
      {"name": "b1.dw", "op": "conv", "out": 8, "kernel": 3, "padding": 1, "groups": 8},
      {"name": "b1.dw.bn", "op": "batchnorm"},
      {"name": "b1.dw.act", "op": "relu6"},
      {"name": "b1.project", "op": "conv", "out": 4, "kernel": 1},
      {"name": "b1.project.bn", "op": "batchnorm"},
      {"name": "b1", "op": "add", "inputs": ["b1.project.bn", "conv1.act"]},
      {"name": "b2.project", "op": "conv", "out": 6, "kernel": 1},
      {"name": "b2.project.bn", "op": "batchnorm"},
      {"name": "pool", "op": "maxpool", "kernel": 2},
      {"name": "head", "op": "conv", "out": 8, "kernel": 1},
      {"name": "head.bn", "op": "batchnorm"},
      {"name": "head.act", "op": "relu"},
      {"name": "avgpool", "op": "gavgpool"},
      {"name": "fc", "op": "linear", "out": 10}
    ],
    "taps": ["b1", "b2.project.bn"]})"),
                                     "bottleneck.json");
}

std::unique_ptr<nn::Network> bottleneck_net() { return graph_net(bottleneck_description()); }

// y = 2x: smooth, and a consumer reading the value before it (or a gradient not routed
// through it) changes the loss or the gradient by a factor of 2.
class DoublingAct : public nn::ActQuantizer {
 public:
  explicit DoublingAct(float backward_factor = 2.f) : backward_factor_(backward_factor) {}
  void forward(Recording& rec, const nn::Tensor& x, nn::Tensor& y, bool) override { nn::add_forward(rec, x, x, y); }
  void backward(Recording& rec, const nn::Tensor&, const nn::Tensor& dy, nn::Tensor& dx, bool acc) override {
    if (!acc) rec.fill(dx.view(), 0u, "test zero");
    nn::accumulate(rec, dy, dx, backward_factor_);
  }
  std::string describe() const override { return "doubling (test)"; }

 private:
  float backward_factor_;  // 2: right; anything else: a wrong backward for the check to catch
};

// Full precision everywhere but the signed sites, which get DoublingAct; records their names.
class SignedOnlyPolicy : public nn::QuantPolicy {
 public:
  std::set<std::string>* names;
  float backward_factor;
  explicit SignedOnlyPolicy(std::set<std::string>* n, float f = 2.f) : names(n), backward_factor(f) {}
  std::unique_ptr<nn::WeightQuantizer> weight(Context&, const std::string&, const nn::Tensor&, nn::LayerRole) override {
    return nullptr;
  }
  std::unique_ptr<nn::ActQuantizer> activation(Context&, const std::string&, const std::vector<int>&,
                                               nn::LayerRole) override {
    return nullptr;
  }
  std::unique_ptr<nn::ActQuantizer> signed_activation(Context&, const std::string& name,
                                                      const std::vector<int>&) override {
    names->insert(name);
    return std::make_unique<DoublingAct>(backward_factor);
  }
};

}  // namespace

TEST_CASE("linear bottleneck: signed sites chosen by the graph, gradient check through them with and without aux" *
          doctest::test_suite("net-gradcheck")) {
  for (bool with_aux : {false, true}) {
    CAPTURE(with_aux);
    std::set<std::string> names;
    GradCheckNet g(bottleneck_net(), with_aux, [&](nn::Network& n) {
      SignedOnlyPolicy p(&names);
      n.apply_quant_policy(p);
    });
    CHECK(names == std::set<std::string>{"b1.act", "b2.project.bn.act"});
    int checked = 0;
    const auto bad = check_gradients(g, &checked);
    report(bad);
    CHECK(bad.empty());
    CHECK(checked >= 2 * int(g.parameters().size()) - 1);
  }
}

TEST_CASE("linear bottleneck gradient check can fail: a signed quantizer's wrong backward is caught" *
          doctest::test_suite("net-gradcheck")) {
  std::set<std::string> names;
  GradCheckNet g(bottleneck_net(), /*with_aux=*/true, [&](nn::Network& n) {
    SignedOnlyPolicy p(&names, 1.f);  // forward y = 2x, backward dx = dy
    n.apply_quant_policy(p);
  });
  int checked = 0;
  CHECK_FALSE(check_gradients(g, &checked).empty());
}

TEST_CASE("linear bottleneck: the sites' consumers read the quantized value, the taps the value before it") {
  // Same net and weights twice, once with the doubling stand-in: the first site's value
  // (tap b1) is the same, the logits differ; without the stand-in at every site they would not.
  Context& ctx = test::ctx();
  auto plain = bottleneck_net(), doubled = bottleneck_net();
  plain->init(3), doubled->init(3);
  std::set<std::string> names;
  SignedOnlyPolicy p(&names);
  doubled->apply_quant_policy(p);
  const auto x = test::random_vector(size_t(plain->input().numel()), 9, -2.f, 2.f);
  std::vector<std::vector<float>> taps, logits;
  for (nn::Network* n : {plain.get(), doubled.get()}) {
    n->input().upload(x);
    const auto t = n->feature_taps();
    Recording rec(ctx);
    n->forward(rec, /*train=*/false);
    rec.finish();
    rec.run();
    taps.push_back(t[0].value->download());
    logits.push_back(n->logits().download());
  }
  CHECK(taps[0] == taps[1]);
  CHECK(logits[0] != logits[1]);
}

TEST_CASE("linear bottleneck: torchvision's MobileNetV2 W4A4 CG-PACT gets a signed quantizer on every block output") {
  nn::ModelConfig mc;
  mc.name = "mobilenet-v2";
  mc.width_mult = 0.25, mc.stem = "cifar";
  mc.in_channels = 1, mc.height = 16, mc.width_px = 16, mc.classes = 10;
  auto net = nn::build_network(test::ctx(), mc, 2);
  auto* graph = dynamic_cast<nn::GraphNetwork*>(net.get());
  REQUIRE(graph);
  quant::QuantConfig q;
  q.wbits = q.abits = 4;
  net->apply_quant_policy(*quant::make_quant_policy(q));
  std::set<std::string> signed_sites;
  for (const auto& a : net->quant_sites().acts) {
    REQUIRE(a.quant);
    if (a.quant->describe().find("signed") != std::string::npos) signed_sites.insert(a.name);
  }
  // Every inverted-residual block's output (its projection BN or its sum) feeds the next
  // block's 1x1 conv, and the last one feeds features.18's: one site per block.
  const nn::ModelDescription& d = graph->description();
  std::set<std::string> want;
  for (size_t i = 0; i + 1 < d.layers.size(); ++i) {
    const auto& l = d.layers[i];
    const auto& next = d.layers[i + 1];
    if ((l.op == nn::LayerOp::Add || l.op == nn::LayerOp::BatchNorm) && next.op == nn::LayerOp::Conv)
      want.insert(l.name + ".act");
  }
  CHECK(want.size() == 17);  // torchvision's 17 inverted residuals
  CHECK(signed_sites == want);
  for (const auto& a : net->quant_sites().acts)
    if (signed_sites.count(a.name)) CHECK(a.quant->describe() == "cg-pact signed 4-bit");
}

TEST_CASE("linear bottleneck: an activation quantizer with no signed form is refused naming the site; lsq's signed") {
  for (const char* aquant : {"dorefa", "minmax"}) {
    CAPTURE(aquant);
    auto net = bottleneck_net();
    quant::QuantConfig q;
    q.wbits = q.abits = 4;
    q.aquant = aquant, q.quantizer = "custom";
    const std::string want = "b1.act: --aquant " + std::string(aquant) + " has no signed form";
    CHECK_THROWS_WITH(net->apply_quant_policy(*quant::make_quant_policy(q)), doctest::Contains(want.c_str()));
  }
  // LSQ has its signed range (Qn = 2^(k-1)) there.
  {
    auto net = bottleneck_net();
    quant::QuantConfig q;
    q.wbits = q.abits = 4;
    q.aquant = "lsq", q.quantizer = "custom";
    net->apply_quant_policy(*quant::make_quant_policy(q));
    int signed_sites = 0;
    for (const auto& a : net->quant_sites().acts)
      if (a.quant && a.quant->describe() == "lsq-act signed 4-bit") ++signed_sites;
    CHECK(signed_sites == 2);
  }
  // 1 bit has no signed level: the error names the site.
  auto net = bottleneck_net();
  quant::QuantConfig q;
  q.wbits = 4, q.abits = 1;
  CHECK_THROWS_WITH(net->apply_quant_policy(*quant::make_quant_policy(q)), doctest::Contains("b1.act"));
}

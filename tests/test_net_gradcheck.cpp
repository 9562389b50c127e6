// Network-level gradient checks (Caffe's GradientChecker, llm.c's whole-model check): for
// each built-in model at a tiny size, the gradient of every parameter tensor that the
// recorded backward pass writes (fused BN + residual kernels, the aux module adding into the
// network's taps) is compared with central finite differences of the loss the forward pass
// computes. Quantized too, with the quantizers at 24 bits (net_gradcheck.h: rounding below
// the loss's float noise, clipping and the learned clip levels real; the statistics that
// DoReFa and SAT detach in backward completed in closed form, LSQ's gradient scale divided
// out). And the checks can fail: a dropped shortcut gradient, a mis-scaled alpha or LSQ step
// gradient are caught.
#include "net_gradcheck.h"
#include "nn/model/graph_network.h"

using namespace vkqat;
using namespace gradcheck;

TEST_CASE("network gradient check: every parameter of each built-in model, with and without the aux module" *
          doctest::test_suite("net-gradcheck")) {
  struct Case {
    std::string model;
    bool aux;
  };
  // resnet32/56 are resnet20's code with more blocks per stage.
  for (const Case& c : {Case{"resnet20", false}, Case{"resnet20", true}, Case{"preact-resnet20", false},
                        Case{"preact-resnet20", true}, Case{"plain-cnn", false}}) {
    CAPTURE(c.model);
    CAPTURE(c.aux);
    GradCheckNet g(c.model, c.aux);
    int checked = 0;
    const auto bad = check_gradients(g, &checked);
    report(bad);
    CHECK(bad.empty());
    CHECK(checked >= 2 * int(g.parameters().size()) - 1);
    if (c.aux) {  // the aux head's own parameters were among them
      bool has_aux = false;
      for (nn::Parameter* p : g.parameters()) has_aux = has_aux || p->name.rfind("aux.", 0) == 0;
      CHECK(has_aux);
    }
  }
}

// The quantizer pairs checked: the default recipe (DoReFa weights, CG-PACT, SAT on the FC),
// PACT's own alpha gradient, and LSQ (signed weight steps, unsigned activation steps; its
// step gradients are differenced with steps that keep every value on its side of the clip,
// net_gradcheck.h: at relative steps of 1e-2 .. 1e-3 values cross the clip level and the
// differences of layer1.0.act1.step swung from -3.4e6 to 5.4e6 around a backward of 8.8e6,
// while fc.act.step agreed to 1e-4 at every step from 1e-2 down).
namespace {
const QuantCheck kRecipe{"dorefa", "cg-pact", true}, kPact{"dorefa", "pact", false}, kLsq{"lsq", "lsq", false};
}  // namespace

TEST_CASE("quantized network gradient check: every parameter incl. PACT's alpha, each built-in model" *
          doctest::test_suite("net-gradcheck")) {
  struct Case {
    std::string model;
    QuantCheck q;
    bool aux;
  };
  for (const Case& c : {Case{"resnet20", kRecipe, false}, Case{"resnet20", kRecipe, true}, Case{"resnet20", kPact, false},
                        Case{"preact-resnet20", kRecipe, false}, Case{"preact-resnet20", kRecipe, true},
                        Case{"preact-resnet20", kPact, true}, Case{"plain-cnn", kRecipe, false}, Case{"plain-cnn", kPact, false},
                        Case{"resnet20", kLsq, false}, Case{"preact-resnet20", kLsq, true}}) {
    CAPTURE(c.model);
    CAPTURE(c.q.str());
    CAPTURE(c.aux);
    GradCheckNet g(c.model, c.aux, [&](nn::Network& n) { quantize_for_check(n, c.q); });
    calibrate_quantizers(g, c.q);
    int alphas = 0;  // PACT's alphas or LSQ's activation steps
    for (nn::Parameter* p : g.parameters())
      alphas += p->name.find(".alpha") != std::string::npos || p->name.find(".step") != std::string::npos;
    CHECK(alphas == int(g.net->act_quantizers().size()));
    CHECK(alphas > 0);
    expect_gradients_match(g);
  }
}

TEST_CASE("quantized network gradient check can fail: an alpha gradient 30% off is caught" *
          doctest::test_suite("net-gradcheck")) {
  GradCheckNet g("resnet20", false, [&](nn::Network& n) { quantize_for_check(n, kRecipe); });
  calibrate_quantizers(g, kRecipe);
  for (nn::Parameter* p : g.parameters())
    if (p->name == "layer1.0.act1.alpha") g.complete[p->name] = [](std::vector<float>& a, const std::vector<float>&) { a[0] *= 1.3f; };
  REQUIRE(g.complete.count("layer1.0.act1.alpha"));
  int checked = 0;
  const auto bad = check_gradients(g, &checked);
  REQUIRE(bad.size() == 1);
  CHECK(bad[0].param == "layer1.0.act1.alpha");
}

// 50% rather than 30%: over LSQ's relative steps (3e-4 .. 1e-3) the loss's rounding allows up
// to about 25% of fc.act.step's gradient (net_gradcheck.h).
TEST_CASE("quantized network gradient check can fail: an LSQ step gradient 50% off is caught" *
          doctest::test_suite("net-gradcheck")) {
  GradCheckNet g("resnet20", false, [&](nn::Network& n) { quantize_for_check(n, kLsq); });
  calibrate_quantizers(g, kLsq);
  const std::string step = "fc.act.step";
  for (nn::Parameter* p : g.parameters())
    if (p->name == step) g.complete[p->name] = [](std::vector<float>& a, const std::vector<float>&) { a[0] *= 1.5f; };
  REQUIRE(g.complete.count(step));
  int checked = 0;
  const auto bad = check_gradients(g, &checked);
  REQUIRE(bad.size() == 1);
  CHECK(bad[0].param == step);
}

TEST_CASE("network gradient check can fail: a dropped shortcut gradient is caught" *
          doctest::test_suite("net-gradcheck")) {
  for (bool with_aux : {false, true}) {
    CAPTURE(with_aux);
    GradCheckNet g("resnet20", with_aux, [](nn::Network& n) {
      // layer1.0 has an identity shortcut (its add's input 1): its gradient no longer reaches the stem.
      auto& graph = dynamic_cast<nn::GraphNetwork&>(n);
      const nn::ModelDescription& d = graph.description();
      REQUIRE(d.layers[size_t(d.index_of("layer1.0"))].inputs.at(1) == "conv1.act");
      graph.drop_add_input_grad_for_test("layer1.0", 1);
    });
    int checked = 0;
    const auto bad = check_gradients(g, &checked);
    bool stem_caught = false;
    for (const Mismatch& m : bad) stem_caught = stem_caught || m.param.rfind("conv1.", 0) == 0 || m.param.rfind("bn1.", 0) == 0;
    CHECK(stem_caught);
    // Blocks after layer1.0 are untouched: none of their parameters is reported.
    for (const Mismatch& m : bad) CHECK(m.param.rfind("layer2.", 0) != 0);
  }
}




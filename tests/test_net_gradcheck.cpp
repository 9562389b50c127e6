// Network-level gradient checks (Caffe's GradientChecker, llm.c's whole-model check): for
// each built-in model at a tiny size, the gradient of every parameter tensor that the
// recorded backward pass writes (fused BN + residual kernels, the aux module adding into the
// network's taps) is compared with central finite differences of the loss the forward pass
// computes. Full precision: rounding makes finite differences meaningless for quantizers,
// whose backward passes have their own closed-form tests. And the check can fail: a dropped
// shortcut gradient is caught.
#include "net_gradcheck.h"
#include "nn/model/resnet.h"

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

TEST_CASE("network gradient check can fail: a dropped shortcut gradient is caught" *
          doctest::test_suite("net-gradcheck")) {
  for (bool with_aux : {false, true}) {
    CAPTURE(with_aux);
    GradCheckNet g("resnet20", with_aux, [](nn::Network& n) {
      // layer1.0 has an identity shortcut: its gradient no longer reaches the stem.
      auto& block = *dynamic_cast<nn::ResNet&>(n).blocks.at(0);
      REQUIRE(!block.down);
      block.drop_shortcut_grad_for_test = true;
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



// Rounding at exact .5 ties is half away from zero on the device and in the references
// (GLSL's round() may round to even there). Inputs are chosen so the pre-round value is an
// exact tie in float: scale factors of 1 and binary fractions.
#include "quant/dorefa.h"
#include "quant/lsq.h"
#include "quant/pact.h"
#include "test_quant_common.h"

using namespace vkqat;
using namespace vkqat::quant;
using nn::Tensor;
namespace tq = vkqat::test::quant;

TEST_CASE("quantizers round exact ties half away from zero" * doctest::test_suite("quant-rounding")) {
  Context& ctx = test::ctx();
  CHECK(round_half_away(2.5f) == 3.f);
  CHECK(round_half_away(-2.5f) == -3.f);
  CHECK(round_half_away(0.5f) == 1.f);
  CHECK(round_half_away(-0.5f) == -1.f);
  CHECK(round_half_away(0.49999997f) == 1.f);  // abs(x) + 0.5 rounds up to 1 in float: same on the device

  // LSQ 4-bit weights, s = 1: r = v exactly.
  const std::vector<float> v = {-7.5f, -2.5f, -1.5f, -0.5f, 0.5f, 1.5f, 2.5f, 6.5f};
  const std::vector<float> v_want = {-8.f, -3.f, -2.f, -1.f, 1.f, 2.f, 3.f, 7.f};
  // PACT 2-bit, alpha = 3: n / alpha = 1, step 1.
  const std::vector<float> x = {0.5f, 1.5f, 2.5f, 0.49999997f};
  const std::vector<float> x_want = {1.f, 2.f, 3.f, 1.f};
  // DoReFa activations 2-bit: x = 0.5 gives r = 1.5 -> level 2.
  Tensor tv(ctx, {8}), ts(ctx, {1}), tvq(ctx, {8}), tx(ctx, {4}), talpha(ctx, {1}), ty(ctx, {4}), td(ctx, {1}),
      tdq(ctx, {1});
  tv.upload(v);
  ts.upload({1.f});
  tx.upload(x);
  talpha.upload({3.f});
  td.upload({0.5f});
  Recording rec(ctx);
  lsq_forward(rec, tv, ts, tvq, LsqConfig{4, QuantTarget::Weight, false});
  pact_forward(rec, tx, talpha, ty, 2);
  dorefa_act_forward(rec, td, tdq, 2);
  rec.finish();
  rec.run();
  tq::check_exact(tvq.download(), v_want, "lsq ties");
  tq::check_exact(ref::lsq_forward(v, {8}, {1.f}, LsqConfig{4, QuantTarget::Weight, false}).y, v_want, "lsq ref ties");
  tq::check_exact(ty.download(), x_want, "pact ties");
  tq::check_exact(ref::pact_forward(x, 3.f, 2).y, x_want, "pact ref ties");
  CHECK(tdq.download()[0] == 2.f * levels(2).inv_n);
  CHECK(ref::dorefa_act_forward({0.5f}, 2).y[0] == 2.f * levels(2).inv_n);
}

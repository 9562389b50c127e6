// PACT with both alpha gradients (src/quant/pact.h).
// Forward: bit-exact against the CPU reference (outputs and level indices), inputs kept
// >= 1e-4 from rounding ties. Backward: dx mask exact; dalpha (original and CG-PACT) within
// 1e-5 relative (+ 1e-7 sum|g| absolute) of a double reference; CG - original equals the
// quantization-error term; the reference equals finite differences of the STE surrogate.
// BatchNorm's fused quantizer epilogue equals BN followed by pact_forward, bit for bit, and
// its fused backward equals pact_backward followed by BN's backward (dx, dgamma, dbeta and,
// with grad_out, the quantizer's dx bit for bit; dalpha, summed in another order, within
// the same bounds).
// Signed (symmetric) PACT, the linear bottleneck's quantizer: forward bit-exact with codes in
// [-n, n]; dx mask exact and both dalpha variants against the double reference; the
// reference against finite differences of its STE surrogate (alpha and x); 1 bit refused.
#include <algorithm>
#include <cmath>
#include <random>

#include "backend/error.h"
#include "nn/ops/batchnorm2d.h"
#include "quant/common.h"
#include "quant/pact.h"
#include "bn_kernel_configs.h"
#include "test_quant_common.h"

using namespace vkqat;
using namespace vkqat::quant;
using nn::Tensor;
namespace tq = vkqat::test::quant;

namespace {

std::vector<std::vector<int>> shapes() {
  std::vector<std::vector<int>> s = {{1, 1, 1, 1}, {1, 3, 5, 3}, {2, 17, 7, 7}, {4, 8, 6, 6}, {3, 1001}};
  for (const auto& r : tq::random_shapes(1, 3, 4)) s.push_back(r);
  return s;
}

std::vector<float> make_input(size_t n, float alpha, int bits, uint32_t seed) {
  const float lo = -0.3f * alpha, hi = 1.3f * alpha;
  return tq::keep_away_from_ties(test::random_vector(n, seed, lo, hi), lo, hi, seed + 1,
                                 [&](const std::vector<float>& v) { return ref::pact_forward(v, alpha, bits).r; });
}

double abs_sum(const std::vector<float>& g) {
  double s = 0;
  for (float v : g) s += std::fabs(double(v));
  return s;
}

struct DeviceGrads {
  std::vector<float> dx;
  float dalpha_original, dalpha_calibrated;
};

// Both backward variants on the device, sharing one scratch; symmetric: the signed form.
DeviceGrads device_backward(const std::vector<int>& shape, const std::vector<float>& xv, float alpha_v,
                            const std::vector<float>& gv, int bits, bool symmetric = false) {
  Context& ctx = test::ctx();
  Tensor x(ctx, shape), alpha(ctx, {1}), g(ctx, shape), dx(ctx, shape), dx2(ctx, shape), da(ctx, {1}), da_cg(ctx, {1});
  Tensor scratch = make_quant_scratch(ctx, shape);
  x.upload(xv);
  alpha.upload({alpha_v});
  g.upload(gv);
  Recording rec(ctx);
  const auto record = symmetric ? pact_signed_backward : pact_backward;
  record(rec, x, alpha, g, dx, false, da, false, scratch, bits, PactGradient::Original);
  record(rec, x, alpha, g, dx2, false, da_cg, false, scratch, bits, PactGradient::Calibrated);
  rec.finish();
  rec.run();
  CHECK(dx.download() == dx2.download());  // the variants differ in dalpha only
  return {dx.download(), da.download()[0], da_cg.download()[0]};
}

// Forward on the device against the CPU reference: outputs bit for bit, and the level
// indices; symmetric: the signed form. Returns the reference's level indices.
std::vector<double> check_forward(const std::vector<int>& shape, const std::vector<float>& xv, float alpha_v, int bits,
                                  bool symmetric) {
  Context& ctx = test::ctx();
  const size_t n = xv.size();
  Tensor x(ctx, shape), alpha(ctx, {1}), y(ctx, shape);
  x.upload(xv);
  alpha.upload({alpha_v});
  Recording rec(ctx);
  (symmetric ? pact_signed_forward : pact_forward)(rec, x, alpha, y, bits);
  rec.finish();
  rec.run();
  const auto got = y.download();
  const auto want = symmetric ? ref::pact_signed_forward(xv, alpha_v, bits) : ref::pact_forward(xv, alpha_v, bits);
  tq::check_exact(got, want.y, "pact y");
  const double step = double(alpha_v * (symmetric ? pact_signed_levels("test", bits) : levels(bits)).inv_n);
  std::vector<double> got_level(n), want_level(n);
  for (size_t i = 0; i < n; ++i) got_level[i] = double(got[i]) / step, want_level[i] = round_half_away(want.r[i]);
  tq::check_levels(got_level, want_level, "pact levels");
  return want_level;
}

}  // namespace

TEST_CASE("pact forward is bit-exact on the level grid" * doctest::test_suite("quant-pact")) {
  for (const auto& shape : shapes()) {
    for (int bits : tq::bit_widths()) {
      for (float alpha_v : {8.f, 1.37f}) {
        CAPTURE(nn::shape_str(shape));
        CAPTURE(bits);
        CAPTURE(alpha_v);
        const size_t n = size_t(tq::numel(shape));
        auto xv = make_input(n, alpha_v, bits, uint32_t(n * 7 + bits));
        if (n > 3) xv[0] = alpha_v, xv[1] = 0.f, xv[2] = -0.f;  // the clamp ends
        check_forward(shape, xv, alpha_v, bits, false);
      }
    }
  }
}

TEST_CASE("pact reads alpha from its buffer on every replay" * doctest::test_suite("quant-pact")) {
  Context& ctx = test::ctx();
  const std::vector<int> shape = {2, 3, 4, 4};
  const size_t n = size_t(tq::numel(shape));
  Tensor x(ctx, shape), alpha(ctx, {1}), y(ctx, shape);
  const auto xv = make_input(n, 2.f, 3, 11);
  x.upload(xv);
  Recording rec(ctx);
  pact_forward(rec, x, alpha, y, 3);
  rec.finish();
  for (float a : {2.f, 0.75f, 3.5f}) {
    const auto xa = tq::keep_away_from_ties(xv, -0.6f, 2.6f, 12, [&](const std::vector<float>& v) {
      return ref::pact_forward(v, a, 3).r;
    });
    x.upload(xa);
    alpha.upload({a});
    rec.run();
    tq::check_exact(y.download(), ref::pact_forward(xa, a, 3).y, "pact y after alpha update");
  }
}

TEST_CASE("pact backward: dx mask exact, both dalpha variants match a double reference" *
          doctest::test_suite("quant-pact")) {
  Context& ctx = test::ctx();
  auto backward_shapes = shapes();
  backward_shapes.push_back({128, 16, 28, 28});  // a ResNet-sized activation: thousands of partials
  for (const auto& shape : backward_shapes) {
    for (int bits : tq::bit_widths()) {
      CAPTURE(nn::shape_str(shape));
      CAPTURE(bits);
      const size_t n = size_t(tq::numel(shape));
      const float alpha_v = 1.5f;
      auto xv = make_input(n, alpha_v, bits, uint32_t(n * 5 + bits));
      if (n > 3) xv[0] = alpha_v, xv[1] = 0.f, xv[2] = -0.f;  // x = alpha is clipped; x = 0 passes
      const auto gv = test::random_vector(n, uint32_t(n + bits), -0.5f, 1.f);
      const auto got = device_backward(shape, xv, alpha_v, gv, bits);
      const auto want = ref::pact_backward(xv, alpha_v, gv, bits, PactGradient::Original);
      const auto want_cg = ref::pact_backward(xv, alpha_v, gv, bits, PactGradient::Calibrated);
      tq::check_exact(got.dx, want.dx, "pact dx");
      const double atol = 1e-7 * abs_sum(gv);
      CHECK(std::fabs(got.dalpha_original - want.dalpha) <= 1e-5 * std::fabs(want.dalpha) + atol);
      CHECK(std::fabs(got.dalpha_calibrated - want_cg.dalpha) <= 1e-5 * std::fabs(want_cg.dalpha) + atol);
    }
  }

  SUBCASE("accumulate adds into dx and dalpha") {
    const std::vector<int> shape = {2, 5, 3, 3};
    const size_t n = size_t(tq::numel(shape));
    const auto xv = make_input(n, 2.f, 4, 3), gv = test::random_vector(n, 4), old = test::random_vector(n, 5);
    Tensor x(ctx, shape), alpha(ctx, {1}), g(ctx, shape), dx(ctx, shape), da(ctx, {1});
    Tensor scratch = make_quant_scratch(ctx, shape);
    x.upload(xv);
    alpha.upload({2.f});
    g.upload(gv);
    dx.upload(old);
    da.upload({0.25f});
    Recording rec(ctx);
    pact_backward(rec, x, alpha, g, dx, true, da, true, scratch, 4, PactGradient::Calibrated);
    rec.finish();
    rec.run();
    const auto want = ref::pact_backward(xv, 2.f, gv, 4, PactGradient::Calibrated);
    std::vector<float> want_dx(n);
    for (size_t i = 0; i < n; ++i) want_dx[i] = old[i] + want.dx[i];
    tq::check_exact(dx.download(), want_dx, "pact dx accumulated");
    CHECK(da.download()[0] == doctest::Approx(0.25 + want.dalpha).epsilon(1e-5));
  }
}

TEST_CASE("CG-PACT minus PACT dalpha is the quantization-error term" * doctest::test_suite("quant-pact")) {
  // x sits a fraction f in [0.1, 0.4] of a step above a level, so q(x/alpha) - x/alpha =
  // -f/n on every unclipped element: the error term is large and of one sign. Some x are
  // clipped (x >= alpha) and some negative (x~ = 0, no error).
  const std::vector<int> shape = {4, 8, 9, 9};
  const size_t n = size_t(tq::numel(shape));
  for (int bits : {2, 3, 4}) {
    CAPTURE(bits);
    const float alpha = 2.5f, levels_n = levels(bits).n;
    std::mt19937 rng(uint32_t(40 + bits));
    std::uniform_int_distribution<int> level(0, int(levels_n) - 1), kind(0, 9);
    std::uniform_real_distribution<float> frac(0.1f, 0.4f), g01(0.5f, 1.f);
    std::vector<float> xv(n), gv(n);
    for (size_t i = 0; i < n; ++i) {
      const int k = kind(rng);
      xv[i] = k == 0 ? alpha * (1.f + frac(rng)) : k == 1 ? -frac(rng) : alpha / levels_n * (float(level(rng)) + frac(rng));
      gv[i] = g01(rng);
    }
    const auto got = device_backward(shape, xv, alpha, gv, bits);
    const double err = ref::pact_quantization_error_term(xv, alpha, gv, bits);
    const double diff = double(got.dalpha_calibrated) - double(got.dalpha_original);
    MESSAGE(bits << " bit: PACT dalpha " << got.dalpha_original << ", CG-PACT dalpha " << got.dalpha_calibrated
                 << ", difference " << diff << ", error term " << err);
    CHECK(std::fabs(err) > 0.01 * std::fabs(got.dalpha_original));  // clearly non-zero
    CHECK(err < 0);
    CHECK(std::fabs(diff - err) <= 1e-5 * std::fabs(err) + 1e-7 * abs_sum(gv));
  }
}

TEST_CASE("pact reference dalpha is the derivative of the STE surrogate" * doctest::test_suite("quant-pact")) {
  // Surrogate of CG-PACT: yq(alpha) = alpha/n (n clamp(x~, alpha)/alpha + c), c = the rounding
  // residual at alpha0 held fixed (STE). Original PACT drops the c term: d/dalpha = [x >= alpha].
  const int bits = 3;
  const double n = levels(bits).n, alpha0 = 1.2;
  auto xv = test::random_vector(64, 31, -0.5f, 1.8f);
  for (auto& v : xv)
    if (std::fabs(v - alpha0) < 0.01) v += 0.05f;  // keep the clamp kink away
  const auto gv = test::random_vector(64, 32);
  std::vector<double> c(xv.size());
  for (size_t i = 0; i < xv.size(); ++i) {
    const double r = n * std::min(std::max(double(xv[i]), 0.0), alpha0) / alpha0;
    c[i] = double(round_half_away(float(r))) - r;
  }
  auto loss = [&](double alpha, bool calibrated) {
    double s = 0;
    for (size_t i = 0; i < xv.size(); ++i) {
      const double r = n * std::min(std::max(double(xv[i]), 0.0), alpha) / alpha;
      s += double(gv[i]) * alpha / n * (r + (calibrated ? c[i] : 0.0));
    }
    return s;
  };
  const double h = 1e-6;
  for (bool calibrated : {false, true}) {
    const double fd = (loss(alpha0 + h, calibrated) - loss(alpha0 - h, calibrated)) / (2 * h);
    const auto want = ref::pact_backward(xv, float(alpha0), gv, bits,
                                         calibrated ? PactGradient::Calibrated : PactGradient::Original);
    CHECK(want.dalpha == doctest::Approx(fd).epsilon(1e-5));
  }
}

TEST_CASE("BN training forward with the PACT epilogue (+ residual) equals BN (+ residual) then pact_forward, bit for bit" *
          doctest::test_suite("quant-pact")) {
  Context& ctx = test::ctx();
  // H*W % 4 == 0 takes the vec4 kernels, the others the float kernels.
  // Every BN kernel configuration (channel walk, one workgroup per channel or split).
  for (const auto& config : test::kBnKernelConfigs)
  for (std::vector<int> shape :
       {std::vector<int>{2, 3, 5, 3}, {4, 5, 4, 4}, {1, 2, 7, 7}, {3, 4, 2, 2}, {3, 1, 33, 31}}) {
    for (int bits : {2, 4, 8}) {
      CAPTURE(config.str());
      test::ScopedBnKernelConfig scoped(config);
      CAPTURE(nn::shape_str(shape));
      CAPTURE(bits);
      const int c = shape[1];
      size_t n = 1;
      for (int d : shape) n *= size_t(d);
      const float alpha = bits == 2 ? 0.7f : 1.9f;
      Tensor x(ctx, shape), y(ctx, shape), q(ctx, shape), y_ref(ctx, shape), q_ref(ctx, shape), clip(ctx, {1});
      Tensor res(ctx, shape), y_res(ctx, shape), q_res(ctx, shape), y_res_ref(ctx, shape), q_res_ref(ctx, shape);
      std::vector<Tensor> stats;
      for (int i = 0; i < 12; ++i) stats.emplace_back(ctx, std::vector<int>{c});
      x.upload(test::random_vector(n, 40 + bits, -2.f, 3.f));
      res.upload(test::random_vector(n, 45 + bits, -1.f, 1.f));
      clip.upload({alpha});
      const auto gamma = test::random_vector(size_t(c), 50, 0.5f, 1.5f), beta = test::random_vector(size_t(c), 51);
      for (int set = 0; set < 2; ++set) {
        stats[6 * set].upload(gamma);
        stats[6 * set + 1].upload(beta);
        stats[6 * set + 2].upload(std::vector<float>(size_t(c), 0.f));
        stats[6 * set + 3].upload(std::vector<float>(size_t(c), 1.f));
      }
      const Levels L = levels(bits);
      nn::BnQuantEpilogue epilogue{&clip, L.n, L.inv_n, &q};
      Recording rec(ctx);
      nn::batchnorm2d_forward_train(rec, x, stats[0], stats[1], stats[2], stats[3], stats[4], stats[5], y, 1e-5f, 0.1f,
                                    false, &epilogue);
      nn::batchnorm2d_forward_train(rec, x, stats[6], stats[7], stats[8], stats[9], stats[10], stats[11], y_ref);
      pact_forward(rec, y_ref, clip, q_ref, bits);
      // With a residual (a block's sum): BN + residual + PACT == BN + residual, then PACT.
      nn::BnQuantEpilogue res_epilogue{&clip, L.n, L.inv_n, &q_res};
      nn::batchnorm2d_forward_train(rec, x, stats[0], stats[1], stats[2], stats[3], stats[4], stats[5], y_res, 1e-5f,
                                    0.1f, false, &res_epilogue, &res);
      nn::batchnorm2d_forward_train(rec, x, stats[6], stats[7], stats[8], stats[9], stats[10], stats[11], y_res_ref,
                                    1e-5f, 0.1f, false, nullptr, &res);
      pact_forward(rec, y_res_ref, clip, q_res_ref, bits);
      rec.run();
      CHECK(y.download() == y_ref.download());
      CHECK(q.download() == q_ref.download());
      CHECK(y_res.download() == y_res_ref.download());
      CHECK(q_res.download() == q_res_ref.download());
      CHECK(y_res.download() != y.download());
      CHECK(stats[2].download() == stats[8].download());  // running stats updated the same way
      CHECK(stats[3].download() == stats[9].download());
    }
  }
  Tensor x(ctx, {2, 3, 4, 4}), y(ctx, {2, 3, 4, 4}), wrong(ctx, {2, 3, 4, 5}), clip(ctx, {1}), ch(ctx, {3});
  nn::BnQuantEpilogue bad{&clip, 15.f, 1.f / 15.f, &wrong};
  Recording rec(ctx);
  CHECK_THROWS_AS(nn::batchnorm2d_forward_train(rec, x, ch, ch, ch, ch, ch, ch, y, 1e-5f, 0.1f, false, &bad), Error);
}

TEST_CASE("BN backward with PACT's backward fused equals pact_backward then BN backward" *
          doctest::test_suite("quant-pact")) {
  Context& ctx = test::ctx();
  // H*W % 4 == 0 takes the vec4 kernels, the others the float kernels.
  // Every BN kernel configuration (channel walk, one workgroup per channel or split).
  for (const auto& config : test::kBnKernelConfigs)
  for (std::vector<int> shape :
       {std::vector<int>{2, 3, 5, 3}, {4, 5, 4, 4}, {1, 2, 7, 7}, {16, 8, 6, 6}, {3, 1, 33, 31}}) {
    for (int bits : {2, 4, 8}) {
      for (PactGradient gradient : {PactGradient::Original, PactGradient::Calibrated}) {
        for (bool with_extra : {false, true}) {
          CAPTURE(config.str());
          test::ScopedBnKernelConfig scoped(config);
          CAPTURE(nn::shape_str(shape));
          CAPTURE(bits);
          CAPTURE(int(gradient));
          CAPTURE(with_extra);
          const int c = shape[1];
          const size_t n = size_t(tq::numel(shape));
          const float alpha = bits == 2 ? 0.7f : 1.3f;
          const Levels L = levels(bits);
          Tensor x(ctx, shape), pre(ctx, shape), q(ctx, shape), dq(ctx, shape), extra(ctx, shape);
          Tensor dx(ctx, shape), dx_ref(ctx, shape), d_pre(ctx, shape), clip(ctx, {1}), dalpha(ctx, {1}),
              dalpha_ref(ctx, {1});
          std::vector<Tensor> ch;  // gamma beta rmean rvar smean sinvstd partials dgamma dbeta dgamma_ref dbeta_ref
          for (int i = 0; i < 11; ++i) ch.emplace_back(ctx, std::vector<int>{c});
          x.upload(test::random_vector(n, 60 + bits, -2.f, 3.f));
          clip.upload({alpha});
          ch[0].upload(test::random_vector(size_t(c), 61, 0.5f, 1.5f));
          ch[1].upload(test::random_vector(size_t(c), 62));
          ch[2].upload(std::vector<float>(size_t(c), 0.f));
          ch[3].upload(std::vector<float>(size_t(c), 1.f));
          const auto dq_v = test::random_vector(n, 63, -1.f, 1.f), extra_v = test::random_vector(n, 64);
          dq.upload(dq_v);
          extra.upload(extra_v);
          d_pre.upload(extra_v);  // the unfused path adds into what d_pre holds
          const auto old_dx = test::random_vector(n, 65);
          dx.upload(old_dx);  // accumulate_dx: both add into the same values
          dx_ref.upload(old_dx);
          Tensor scratch = make_quant_scratch(ctx, shape);
          nn::BnQuantEpilogue epilogue{&clip, L.n, L.inv_n, &q};
          nn::BnQuantBackward fused{&clip, L.n, L.inv_n, gradient == PactGradient::Calibrated,
                                    with_extra ? &extra : nullptr, &ch[6]};
          Recording rec(ctx);
          nn::batchnorm2d_forward_train(rec, x, ch[0], ch[1], ch[2], ch[3], ch[4], ch[5], pre, 1e-5f, 0.1f, false,
                                        &epilogue);
          nn::batchnorm2d_backward(rec, x, pre, dq, ch[0], ch[4], ch[5], dx, true, ch[7], ch[8], false, false, &fused);
          pact_merge_clip_grad(rec, ch[6], dalpha, false);
          // grad_out: the same pass also writes the quantizer's input gradient (in place over
          // `extra` when there is one, as a residual block does with its sum's gradient).
          Tensor grad(ctx, shape), dx2(ctx, shape), dgamma2(ctx, {c}), dbeta2(ctx, {c});
          grad.upload(extra_v);
          dx2.upload(old_dx);
          nn::BnQuantBackward fused_in_place{&clip, L.n, L.inv_n, gradient == PactGradient::Calibrated,
                                             with_extra ? &grad : nullptr, &ch[6]};
          nn::batchnorm2d_backward(rec, x, pre, dq, ch[0], ch[4], ch[5], dx2, true, dgamma2, dbeta2, false, false,
                                   &fused_in_place, &grad);
          pact_backward(rec, pre, clip, dq, d_pre, with_extra, dalpha_ref, false, scratch, bits, gradient);
          nn::batchnorm2d_backward(rec, x, pre, d_pre, ch[0], ch[4], ch[5], dx_ref, true, ch[9], ch[10], false);
          rec.finish();
          rec.run();
          CHECK(dx.download() == dx_ref.download());
          CHECK(dx2.download() == dx_ref.download());
          CHECK(grad.download() == d_pre.download());
          CHECK(dgamma2.download() == ch[9].download());
          CHECK(ch[7].download() == ch[9].download());
          CHECK(ch[8].download() == ch[10].download());
          const auto want = ref::pact_backward(pre.download(), alpha, dq_v, bits, gradient);
          const double atol = 1e-7 * abs_sum(dq_v);
          const float got = dalpha.download()[0];
          CHECK(std::fabs(got - want.dalpha) <= 1e-5 * std::fabs(want.dalpha) + atol);
          CHECK(std::fabs(got - dalpha_ref.download()[0]) <= 1e-5 * std::fabs(want.dalpha) + 2 * atol);
        }
      }
    }
  }
  Tensor x(ctx, {2, 3, 4, 4}), y(ctx, {2, 3, 4, 4}), wrong(ctx, {2, 3, 4, 5}), clip(ctx, {1}), ch(ctx, {3}),
      ch4(ctx, {4});
  Recording rec(ctx);
  nn::BnQuantBackward no_partials{&clip, 15.f, 1.f / 15.f, false, nullptr, nullptr};
  nn::BnQuantBackward bad_partials{&clip, 15.f, 1.f / 15.f, false, nullptr, &ch4};
  nn::BnQuantBackward bad_extra{&clip, 15.f, 1.f / 15.f, false, &wrong, &ch};
  for (const nn::BnQuantBackward* q : {&no_partials, &bad_partials, &bad_extra})
    CHECK_THROWS_AS(nn::batchnorm2d_backward(rec, x, y, y, ch, ch, ch, x, false, ch, ch, false, false, q), Error);
  nn::BnQuantBackward ok{&clip, 15.f, 1.f / 15.f, false, nullptr, &ch};
  CHECK_THROWS_AS(nn::batchnorm2d_backward(rec, x, y, y, ch, ch, ch, x, false, ch, ch, false, true, &ok), Error);
}

TEST_CASE("pact rejects bad bit-widths and shapes" * doctest::test_suite("quant-pact")) {
  Context& ctx = test::ctx();
  Tensor x(ctx, {2, 3}), y(ctx, {2, 3}), other(ctx, {3, 2}), alpha(ctx, {1}), alpha2(ctx, {2}), da(ctx, {1});
  Tensor scratch = make_quant_scratch(ctx, {2, 3}), small(ctx, {1});
  Recording rec(ctx);
  for (int bits : {0, kMaxKernelBits + 1}) {
    CHECK_THROWS_AS(pact_forward(rec, x, alpha, y, bits), Error);
    CHECK_THROWS_AS(pact_backward(rec, x, alpha, y, y, false, da, false, scratch, bits, PactGradient::Original), Error);
  }
  CHECK_THROWS_AS(pact_forward(rec, x, alpha, other, 4), Error);
  CHECK_THROWS_AS(pact_forward(rec, x, alpha2, y, 4), Error);
  CHECK_THROWS_AS(pact_backward(rec, x, alpha, other, y, false, da, false, scratch, 4, PactGradient::Original), Error);
  CHECK_THROWS_AS(pact_backward(rec, x, alpha, y, other, false, da, false, scratch, 4, PactGradient::Original), Error);
  CHECK_THROWS_AS(pact_backward(rec, x, alpha, y, y, false, alpha2, false, scratch, 4, PactGradient::Original), Error);
  CHECK_THROWS_AS(pact_backward(rec, x, alpha, y, y, false, da, false, small, 4, PactGradient::Original), Error);
}

// ---- symmetric (signed) PACT: the linear bottleneck's quantizer ----------------------------
namespace {

std::vector<float> make_signed_input(size_t n, float alpha, int bits, uint32_t seed) {
  const float lo = -1.3f * alpha, hi = 1.3f * alpha;
  return tq::keep_away_from_ties(test::random_vector(n, seed, lo, hi), lo, hi, seed + 1,
                                 [&](const std::vector<float>& v) { return ref::pact_signed_forward(v, alpha, bits).r; });
}

const std::vector<int> kSignedBits = {2, 3, 4, 8};

}  // namespace

TEST_CASE("signed pact forward is bit-exact on the symmetric level grid" * doctest::test_suite("quant-pact")) {
  for (const auto& shape : shapes()) {
    for (int bits : kSignedBits) {
      for (float alpha_v : {8.f, 1.37f}) {
        CAPTURE(nn::shape_str(shape));
        CAPTURE(bits);
        CAPTURE(alpha_v);
        const size_t n = size_t(tq::numel(shape));
        auto xv = make_signed_input(n, alpha_v, bits, uint32_t(n * 11 + bits));
        if (n > 3) xv[0] = alpha_v, xv[1] = -alpha_v, xv[2] = -0.f;  // the clamp ends and zero
        const std::vector<double> want_level = check_forward(shape, xv, alpha_v, bits, true);
        const Levels L = pact_signed_levels("test", bits);
        // Symmetric: codes in [-n, n], both signs reached on a non-trivial input.
        double lo = 0, hi = 0;
        for (double v : want_level) lo = std::min(lo, v), hi = std::max(hi, v);
        CHECK(lo >= -L.n);
        CHECK(hi <= L.n);
        if (n > 3) CHECK((lo == -L.n && hi == L.n));
      }
    }
  }
}

TEST_CASE("signed pact backward: dx mask exact, both dalpha variants match a double reference" *
          doctest::test_suite("quant-pact")) {
  auto backward_shapes = shapes();
  backward_shapes.push_back({32, 24, 14, 14});  // a MobileNetV2-sized bottleneck: many partials
  // And 24 bits, the network gradient checks' (the forward's level test above cannot recover
  // 2^23 level indices from float outputs).
  std::vector<int> bit_widths = kSignedBits;
  bit_widths.push_back(kMaxKernelBits);
  for (const auto& shape : backward_shapes) {
    for (int bits : bit_widths) {
      CAPTURE(nn::shape_str(shape));
      CAPTURE(bits);
      const size_t n = size_t(tq::numel(shape));
      const float alpha_v = 1.5f;
      auto xv = make_signed_input(n, alpha_v, bits, uint32_t(n * 3 + bits));
      if (n > 3) xv[0] = alpha_v, xv[1] = -alpha_v, xv[2] = -0.f;  // +-alpha count as inside
      const auto gv = test::random_vector(n, uint32_t(n + 7 * bits), -0.5f, 1.f);
      const auto got = device_backward(shape, xv, alpha_v, gv, bits, /*symmetric=*/true);
      const auto want = ref::pact_signed_backward(xv, alpha_v, gv, bits, PactGradient::Original);
      const auto want_cg = ref::pact_signed_backward(xv, alpha_v, gv, bits, PactGradient::Calibrated);
      tq::check_exact(got.dx, want.dx, "signed pact dx");
      const double atol = 1e-7 * abs_sum(gv);
      CHECK(std::fabs(got.dalpha_original - want.dalpha) <= 1e-5 * std::fabs(want.dalpha) + atol);
      CHECK(std::fabs(got.dalpha_calibrated - want_cg.dalpha) <= 1e-5 * std::fabs(want_cg.dalpha) + atol);
    }
  }
}

TEST_CASE("signed pact reference gradients are the derivatives of the STE surrogate" *
          doctest::test_suite("quant-pact")) {
  // yq(x, alpha) = alpha/n (n clamp(x, -alpha, alpha)/alpha + c), c = round(r0) - r0 at alpha0
  // held fixed (STE); original PACT drops c's share of the alpha derivative: inside, the
  // derivative is then 0, above +1, below -1. Finite differences in alpha and in each x.
  for (int bits : {2, 4}) {
    CAPTURE(bits);
    const double n = pact_signed_levels("test", bits).n, alpha0 = 1.2;
    auto xv = test::random_vector(96, uint32_t(60 + bits), -2.f, 2.f);
    for (auto& v : xv)
      if (std::fabs(std::fabs(v) - alpha0) < 0.01) v += 0.05f;  // keep the clamp kinks away
    const auto gv = test::random_vector(96, uint32_t(70 + bits));
    std::vector<double> c(xv.size());
    for (size_t i = 0; i < xv.size(); ++i) {
      const double r = n * std::clamp(double(xv[i]), -alpha0, alpha0) / alpha0;
      c[i] = double(round_half_away(float(r))) - r;
    }
    auto loss = [&](double alpha, const std::vector<double>& x, bool calibrated) {
      double s = 0;
      for (size_t i = 0; i < x.size(); ++i) {
        const double r = n * std::clamp(x[i], -alpha, alpha) / alpha;
        s += double(gv[i]) * alpha / n * (r + (calibrated ? c[i] : 0.0));
      }
      return s;
    };
    std::vector<double> xd(xv.begin(), xv.end());
    const double h = 1e-6;
    for (bool calibrated : {false, true}) {
      CAPTURE(calibrated);
      const double fd = (loss(alpha0 + h, xd, calibrated) - loss(alpha0 - h, xd, calibrated)) / (2 * h);
      const auto want = ref::pact_signed_backward(xv, float(alpha0), gv, bits,
                                                  calibrated ? PactGradient::Calibrated : PactGradient::Original);
      CHECK(want.dalpha == doctest::Approx(fd).epsilon(1e-5));
      for (size_t i = 0; i < xd.size(); i += 7) {
        auto xp = xd, xm = xd;
        xp[i] += h, xm[i] -= h;
        const double fdx = (loss(alpha0, xp, calibrated) - loss(alpha0, xm, calibrated)) / (2 * h);
        CHECK(double(want.dx[i]) == doctest::Approx(fdx).epsilon(1e-5));
      }
    }
    // The two variants differ by the quantization-error term, clearly non-zero here.
    const auto orig = ref::pact_signed_backward(xv, float(alpha0), gv, bits, PactGradient::Original);
    const auto cg = ref::pact_signed_backward(xv, float(alpha0), gv, bits, PactGradient::Calibrated);
    CHECK(std::fabs(cg.dalpha - orig.dalpha) > 1e-3);
  }
}

TEST_CASE("signed pact refuses 1 bit (no level per side) and more than the kernels take, naming the op" * doctest::test_suite("quant-pact")) {
  Context& ctx = test::ctx();
  Tensor x(ctx, {2, 3}), alpha(ctx, {1}), y(ctx, {2, 3});
  Recording rec(ctx);
  CHECK_THROWS_WITH_AS(pact_signed_forward(rec, x, alpha, y, 1), doctest::Contains("pact_signed_forward: signed activations need 2..24 bits"), Error);
  CHECK_THROWS_WITH_AS(ref::pact_signed_forward({1.f}, 1.f, kMaxKernelBits + 1), doctest::Contains("need 2..24 bits"), Error);
}

// DoReFa weight and activation quantizers (src/quant/dorefa.h).
// Forwards: bit-exact against the CPU reference (outputs and level indices) with inputs kept
// >= 1e-4 (weights: 1e-3, tanh is not correctly rounded anywhere) away from rounding ties.
// Backwards: STE masks exact; the weight gradient against the closed form g (1 - t^2) / max|t|
// in double at 1e-5 relative; the closed form against finite differences of the STE surrogate.
#include <algorithm>
#include <cmath>

#include "backend/error.h"
#include "quant/dorefa.h"
#include "test_quant_common.h"

using namespace vkqat;
using namespace vkqat::quant;
using nn::Tensor;
namespace tq = vkqat::test::quant;

namespace {

const std::vector<std::vector<int>> kWeightShapes = {{1}, {3}, {5, 7}, {3, 5, 3, 3}, {16, 16, 3, 3}, {64, 64, 3, 3}};

// Weights spanning both branches of tanh_sech2 (|w| < 0.625 and above) unless `scale` is small.
std::vector<float> make_weights(const std::vector<int>& shape, int bits, float scale, uint32_t seed) {
  auto w = test::random_vector(size_t(tq::numel(shape)), seed, -scale, scale);
  if (bits == 1) return w;
  return tq::keep_away_from_ties(w, -scale, scale, seed + 1, [&](const std::vector<float>& v) {
    return ref::dorefa_weight_forward(v, ref::dorefa_weight_stat(v, bits), bits).r;
  }, 1e-3);
}

}  // namespace

TEST_CASE("dorefa weight forward is bit-exact on the level grid" * doctest::test_suite("quant-dorefa")) {
  Context& ctx = test::ctx();
  for (const auto& shape : kWeightShapes) {
    for (int bits : tq::bit_widths()) {
      for (float scale : {0.05f, 2.f}) {
        CAPTURE(nn::shape_str(shape));
        CAPTURE(bits);
        CAPTURE(scale);
        const auto wv = make_weights(shape, bits, scale, uint32_t(tq::numel(shape) * 10 + bits));
        Tensor w(ctx, shape), wq(ctx, shape), stat(ctx, {1});
        Tensor scratch = make_quant_scratch(ctx, shape);
        w.upload(wv);
        Recording rec(ctx);
        dorefa_weight_forward(rec, w, wq, stat, scratch, bits);
        rec.finish();
        rec.run();
        const float dev_stat = stat.download()[0];
        const float want_stat = ref::dorefa_weight_stat(wv, bits);
        if (bits == 1)
          CHECK(dev_stat == doctest::Approx(want_stat).epsilon(1e-6));
        else
          CHECK(dev_stat == want_stat);  // max|w| is exact
        const auto got = wq.download();
        const auto want = ref::dorefa_weight_forward(wv, dev_stat, bits);
        tq::check_exact(got, want.y, "dorefa wq");
        std::vector<double> got_level(got.size()), want_level(got.size());
        const double n = double((1 << bits) - 1);
        for (size_t i = 0; i < got.size(); ++i) {
          got_level[i] = bits == 1 ? double(got[i]) / double(dev_stat) : (double(got[i]) + 1.0) / 2.0 * n;
          want_level[i] = bits == 1 ? want.r[i] : round_half_away(want.r[i]);
        }
        tq::check_levels(got_level, want_level, "dorefa weight levels");
      }
    }
  }
}

TEST_CASE("dorefa weight backward equals the closed form" * doctest::test_suite("quant-dorefa")) {
  Context& ctx = test::ctx();
  for (const auto& shape : kWeightShapes) {
    for (int bits : {1, 2, 4, 8}) {
      CAPTURE(nn::shape_str(shape));
      CAPTURE(bits);
      const size_t n = size_t(tq::numel(shape));
      const auto wv = test::random_vector(n, uint32_t(n + bits), -1.5f, 1.5f);
      const auto gv = test::random_vector(n, uint32_t(n + bits + 1));
      const auto old = test::random_vector(n, uint32_t(n + bits + 2));
      Tensor w(ctx, shape), wq(ctx, shape), stat(ctx, {1}), g(ctx, shape), dw(ctx, shape), dw_acc(ctx, shape);
      Tensor scratch = make_quant_scratch(ctx, shape);
      w.upload(wv);
      g.upload(gv);
      dw_acc.upload(old);
      Recording rec(ctx);
      dorefa_weight_forward(rec, w, wq, stat, scratch, bits);
      dorefa_weight_backward(rec, w, stat, g, dw, false, bits);
      dorefa_weight_backward(rec, w, stat, g, dw_acc, true, bits);
      rec.finish();
      rec.run();
      const auto want = ref::dorefa_weight_backward(wv, stat.download()[0], gv, bits);
      const std::vector<float> want_f(want.begin(), want.end());
      std::vector<float> want_acc(n);
      for (size_t i = 0; i < n; ++i) want_acc[i] = float(double(old[i]) + want[i]);
      if (bits == 1) {
        tq::check_exact(dw.download(), gv, "binary dorefa dw (STE)");
      } else {
        test::check_close(dw.download(), want_f, 1e-5, 1e-7, "dorefa dw");
      }
      test::check_close(dw_acc.download(), want_acc, 1e-5, 1e-6, "dorefa dw accumulated");
    }
  }
}

TEST_CASE("dorefa weight closed form is the derivative of the STE surrogate" * doctest::test_suite("quant-dorefa")) {
  // Surrogate: wq(w) = 2 (u(w) + c/n) - 1 with the rounding residual c and max|t| frozen.
  const auto wv = test::random_vector(40, 5, -2.f, 2.f);
  const auto gv = test::random_vector(40, 6);
  const float stat = *std::max_element(wv.begin(), wv.end(), [](float a, float b) { return std::fabs(a) < std::fabs(b); });
  const double m = std::tanh(std::fabs(double(stat)));
  const auto dw = ref::dorefa_weight_backward(wv, std::fabs(stat), gv, 4);
  for (size_t i = 0; i < wv.size(); ++i) {
    auto wq = [&](double x) { return 2.0 * (std::tanh(x) / (2 * m) + 0.5) - 1.0; };
    const double h = 1e-6, fd = double(gv[i]) * (wq(wv[i] + h) - wq(wv[i] - h)) / (2 * h);
    CHECK(dw[i] == doctest::Approx(fd).epsilon(1e-6));
  }
}

TEST_CASE("dorefa activations: forward bit-exact, backward mask exact" * doctest::test_suite("quant-dorefa")) {
  Context& ctx = test::ctx();
  const std::vector<std::vector<int>> shapes = {{1, 1, 1, 1}, {1, 3, 5, 3}, {2, 17, 7, 7}, {4, 8, 6, 6}, {3, 1000}};
  for (const auto& shape : shapes) {
    for (int bits : tq::bit_widths()) {
      CAPTURE(nn::shape_str(shape));
      CAPTURE(bits);
      const size_t n = size_t(tq::numel(shape));
      auto xv = tq::keep_away_from_ties(test::random_vector(n, uint32_t(n * 3 + bits), -0.5f, 1.5f), -0.5f, 1.5f,
                                        7, [&](const std::vector<float>& v) { return ref::dorefa_act_forward(v, bits).r; });
      if (n > 4) xv[0] = 0.f, xv[1] = 1.f, xv[2] = -0.f;  // mask boundaries: both ends inside
      const auto gv = test::random_vector(n, uint32_t(n + 1));
      const auto old = test::random_vector(n, uint32_t(n + 2));
      Tensor x(ctx, shape), y(ctx, shape), g(ctx, shape), dx(ctx, shape), dx_acc(ctx, shape);
      x.upload(xv);
      g.upload(gv);
      dx_acc.upload(old);
      Recording rec(ctx);
      dorefa_act_forward(rec, x, y, bits);
      dorefa_act_backward(rec, x, g, dx, false);
      dorefa_act_backward(rec, x, g, dx_acc, true);
      rec.finish();
      rec.run();
      const auto want = ref::dorefa_act_forward(xv, bits);
      const auto got = y.download();
      tq::check_exact(got, want.y, "dorefa y");
      std::vector<double> got_level(n), want_level(n);
      for (size_t i = 0; i < n; ++i) {
        got_level[i] = double(got[i]) * double((1 << bits) - 1);
        want_level[i] = round_half_away(want.r[i]);
      }
      tq::check_levels(got_level, want_level, "dorefa activation levels");
      const auto want_dx = ref::dorefa_act_backward(xv, gv);
      tq::check_exact(dx.download(), want_dx, "dorefa dx");
      std::vector<float> want_acc(n);
      for (size_t i = 0; i < n; ++i) want_acc[i] = old[i] + want_dx[i];
      tq::check_exact(dx_acc.download(), want_acc, "dorefa dx accumulated");
    }
  }
}

TEST_CASE("dorefa rejects bad bit-widths and shapes" * doctest::test_suite("quant-dorefa")) {
  Context& ctx = test::ctx();
  Tensor w(ctx, {4, 3}), wq(ctx, {4, 3}), other(ctx, {3, 4}), stat(ctx, {1}), stat2(ctx, {2});
  Tensor scratch = make_quant_scratch(ctx, {4, 3}), small(ctx, {1});
  Recording rec(ctx);
  for (int bits : {0, kMaxKernelBits + 1, 32, -1}) {
    CHECK_THROWS_AS(dorefa_weight_forward(rec, w, wq, stat, scratch, bits), Error);
    CHECK_THROWS_AS(dorefa_weight_backward(rec, w, stat, wq, other, false, bits), Error);
    CHECK_THROWS_AS(dorefa_act_forward(rec, w, wq, bits), Error);
  }
  CHECK_THROWS_AS(dorefa_weight_forward(rec, w, other, stat, scratch, 4), Error);
  CHECK_THROWS_AS(dorefa_weight_forward(rec, w, wq, stat2, scratch, 4), Error);
  CHECK_THROWS_AS(dorefa_weight_forward(rec, w, wq, stat, small, 4), Error);
  CHECK_THROWS_AS(dorefa_weight_backward(rec, w, stat, wq, other, false, 4), Error);
  CHECK_THROWS_AS(dorefa_act_forward(rec, w, other, 4), Error);
  CHECK_THROWS_AS(dorefa_act_backward(rec, w, other, wq, false), Error);
}

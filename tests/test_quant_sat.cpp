// SAT weight rescaling (src/quant/sat.h): n Var[W*] = 1 to float precision (|n Var - 1| < 1e-5),
// the factor within 1e-6 of a double reference, W* = Wq * factor and dWq = dW* * factor exact
// given the device's factor, the argmax of the logits unchanged, FC and conv (fan-out) variants.
#include <cmath>

#include "backend/error.h"
#include "quant/dorefa.h"
#include "quant/sat.h"
#include "test_quant_common.h"

using namespace vkqat;
using namespace vkqat::quant;
using nn::Tensor;
namespace tq = vkqat::test::quant;

namespace {

double population_var(const std::vector<float>& v) {
  double mean = 0, m2 = 0;
  for (float x : v) mean += x;
  mean /= double(v.size());
  for (float x : v) m2 += (x - mean) * (x - mean);
  return m2 / double(v.size());
}

// DoReFa-quantized weights in [-1, 1], the input SAT sees in a quantized net.
std::vector<float> quantized_weights(size_t n, int bits, uint32_t seed) {
  const auto w = test::random_vector(n, seed, -0.3f, 0.3f);
  return ref::dorefa_weight_forward(w, ref::dorefa_weight_stat(w, bits), bits).y;
}

struct SatRun {
  std::vector<float> w_star, stats;
};

SatRun run_sat(const std::vector<int>& shape, const std::vector<float>& wqv, int64_t n) {
  Context& ctx = test::ctx();
  Tensor wq(ctx, shape), w_star(ctx, shape), stats(ctx, {2});
  Tensor scratch = make_quant_scratch(ctx, shape);
  wq.upload(wqv);
  Recording rec(ctx);
  sat_forward(rec, wq, w_star, stats, scratch, n);
  rec.finish();
  rec.run();
  return {w_star.download(), stats.download()};
}

}  // namespace

TEST_CASE("sat: n Var[W*] = 1 and W* = Wq * factor, FC and conv" * doctest::test_suite("quant-sat")) {
  const std::vector<std::vector<int>> shapes = {{10, 64}, {10, 512}, {1, 7}, {16, 16, 3, 3}, {64, 64, 3, 3}, {3, 1, 1, 1}};
  for (const auto& shape : shapes) {
    for (int bits : {2, 4, 8}) {
      CAPTURE(nn::shape_str(shape));
      CAPTURE(bits);
      const int64_t n = shape.size() == 2 ? sat_fc_n(shape) : sat_conv_fan_out(shape);
      const auto wqv = quantized_weights(size_t(tq::numel(shape)), bits, uint32_t(tq::numel(shape) + bits));
      const auto got = run_sat(shape, wqv, n);
      const auto want = ref::sat_forward(wqv, n);
      CHECK(got.stats[1] == doctest::Approx(want.var).epsilon(1e-5));
      CHECK(got.stats[0] == doctest::Approx(want.factor).epsilon(1e-6));
      std::vector<float> exact(wqv.size());
      for (size_t i = 0; i < wqv.size(); ++i) exact[i] = wqv[i] * got.stats[0];
      tq::check_exact(got.w_star, exact, "W* = Wq * factor");
      const double scaled = double(n) * population_var(got.w_star);
      CHECK(std::fabs(scaled - 1.0) < 1e-5);
    }
  }
  CHECK(sat_conv_fan_out({64, 32, 3, 3}) == 576);
  CHECK(sat_fc_n({10, 64}) == 10);
}

TEST_CASE("sat keeps the argmax of the logits" * doctest::test_suite("quant-sat")) {
  const std::vector<int> shape = {10, 64};
  const auto wqv = quantized_weights(640, 2, 3);
  const auto got = run_sat(shape, wqv, 10);
  const auto x = test::random_vector(32 * 64, 4);
  auto argmax = [&](const std::vector<float>& w, int row) {
    int best = 0;
    double best_v = -1e300;
    for (int o = 0; o < 10; ++o) {
      double s = 0;
      for (int k = 0; k < 64; ++k) s += double(x[size_t(row * 64 + k)]) * double(w[size_t(o * 64 + k)]);
      if (s > best_v) best_v = s, best = o;
    }
    return best;
  };
  for (int row = 0; row < 32; ++row) CHECK(argmax(got.w_star, row) == argmax(wqv, row));
  CHECK(got.stats[0] < 1.f);  // DoReFa's +-1 weights are shrunk, the point of SAT
}

TEST_CASE("sat backward scales by the same factor; full precision and constant tensors" *
          doctest::test_suite("quant-sat")) {
  Context& ctx = test::ctx();
  const std::vector<int> shape = {10, 33};
  const size_t n = 330;
  const auto wv = test::random_vector(n, 8, -0.2f, 0.2f);  // "clamp-only": the FP weights themselves
  const auto gv = test::random_vector(n, 9), old = test::random_vector(n, 10);
  Tensor w(ctx, shape), w_star(ctx, shape), stats(ctx, {2}), g(ctx, shape), dw(ctx, shape), dw_acc(ctx, shape);
  Tensor scratch = make_quant_scratch(ctx, shape);
  w.upload(wv);
  g.upload(gv);
  dw_acc.upload(old);
  Recording rec(ctx);
  sat_forward(rec, w, w_star, stats, scratch, 10);
  sat_backward(rec, stats, g, dw, false);
  sat_backward(rec, stats, g, dw_acc, true);
  rec.finish();
  rec.run();
  const float factor = stats.download()[0];
  CHECK(factor == doctest::Approx(ref::sat_forward(wv, 10).factor).epsilon(1e-6));
  std::vector<float> want(n), want_acc(n);
  for (size_t i = 0; i < n; ++i) want[i] = gv[i] * factor, want_acc[i] = old[i] + want[i];
  tq::check_exact(dw.download(), want, "dWq = dW* * factor");
  tq::check_exact(dw_acc.download(), want_acc, "dWq accumulated");
  CHECK(std::fabs(10.0 * population_var(w_star.download()) - 1.0) < 1e-5);

  // Replay with new weights: the factor follows; a constant tensor (Var = 0) gets factor 1.
  w.upload(std::vector<float>(n, 0.5f));
  rec.run();
  CHECK(stats.download()[0] == 1.f);
  tq::check_exact(w_star.download(), std::vector<float>(n, 0.5f), "constant tensor unchanged");
}

TEST_CASE("sat rejects bad shapes" * doctest::test_suite("quant-sat")) {
  Context& ctx = test::ctx();
  Tensor wq(ctx, {4, 3}), ws(ctx, {4, 3}), other(ctx, {3, 4}), stats(ctx, {2}), stats1(ctx, {1});
  Tensor scratch = make_quant_scratch(ctx, {4, 3}), small(ctx, {1});
  Recording rec(ctx);
  CHECK_THROWS_AS(sat_forward(rec, wq, other, stats, scratch, 4), Error);
  CHECK_THROWS_AS(sat_forward(rec, wq, ws, stats1, scratch, 4), Error);
  CHECK_THROWS_AS(sat_forward(rec, wq, ws, stats, small, 4), Error);
  CHECK_THROWS_AS(sat_forward(rec, wq, ws, stats, scratch, 0), Error);
  CHECK_THROWS_AS(sat_backward(rec, stats, wq, other, false), Error);
  CHECK_THROWS_AS(sat_backward(rec, stats1, wq, ws, false), Error);
  CHECK_THROWS_AS(sat_fc_n({4, 3, 3, 3}), Error);
  CHECK_THROWS_AS(sat_conv_fan_out({4, 3}), Error);
}

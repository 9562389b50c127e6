// dropout: GPU vs CPU reference (the same counter-based mask bit for bit), replaying one
// recording advances the mask, keep rate, p = 0 / p = 1 / eval, finite differences of the
// reference backward, bad p and step tensors.
#include <cmath>
#include <limits>

#include "backend/error.h"
#include "nn/ops/dropout.h"
#include "testutil.h"

using namespace vkqat;
using namespace vkqat::nn;

namespace {
DropoutParams params(float p, uint32_t seed) {
  DropoutParams d;
  d.p = p;
  d.seed = seed;
  return d;
}

Tensor step_tensor(Context& ctx, uint32_t value) {
  Tensor t(ctx, {1}, DType::U32);
  t.upload_u32({value});
  return t;
}
}  // namespace

TEST_CASE("dropout forward and backward match the CPU reference" * doctest::test_suite("dropout")) {
  Context& ctx = test::ctx();
  // Element counts divisible by 4 take the vec4 kernel, the others the float kernel.
  for (std::vector<int> shape : {std::vector<int>{1}, {7}, {2, 3, 5, 5}, {1, 4, 1, 1}, {4, 1000}, {3, 17, 9, 9}})
    for (float p : {0.1f, 0.5f, 0.9f}) {
      CAPTURE(shape_str(shape));
      CAPTURE(p);
      const DropoutParams d = params(p, 1234u + uint32_t(shape.size()));
      const uint32_t t = 4000000000u;  // large: the counter wraps like the shader's
      Tensor step = step_tensor(ctx, t);
      Tensor x(ctx, shape), y(ctx, shape), dy(ctx, shape), dx(ctx, shape), dx_acc(ctx, shape);
      const size_t n = size_t(x.numel());
      auto xv = test::random_vector(n, 20), dyv = test::random_vector(n, 21), dx0 = test::random_vector(n, 22);
      x.upload(xv);
      dy.upload(dyv);
      dx_acc.upload(dx0);
      Recording rec(ctx);
      dropout_forward(rec, d, step, x, y, true);
      dropout_backward(rec, d, step, dy, dx, false);
      dropout_backward(rec, d, step, dy, dx_acc, true);
      rec.run();
      test::check_close(y.download(), ref::dropout_forward(d, t, xv), 0, 0, "dropout y");
      auto dx_want = ref::dropout_backward(d, t, dyv);
      test::check_close(dx.download(), dx_want, 0, 0, "dropout dx");
      for (size_t i = 0; i < n; ++i) dx_want[i] += dx0[i];
      test::check_close(dx_acc.download(), dx_want, 1e-6, 1e-7, "dropout dx (accumulate)");
    }
}

TEST_CASE("dropout: one recording replayed draws the next step's mask after dropout_advance" *
          doctest::test_suite("dropout")) {
  Context& ctx = test::ctx();
  const DropoutParams d = params(0.5f, 7u);
  const uint32_t first = 41;
  Tensor step = step_tensor(ctx, first);
  Tensor x(ctx, {3, 64}), y(ctx, {3, 64}), dx(ctx, {3, 64});
  auto xv = test::random_vector(size_t(x.numel()), 23, 0.5f, 1.f);  // never 0: a zero in y means dropped
  x.upload(xv);
  Recording rec(ctx);
  dropout_forward(rec, d, step, x, y, true);
  dropout_backward(rec, d, step, x, dx, false);  // x as dy: dx must equal y
  dropout_advance(rec, step);
  std::vector<float> previous;
  for (uint32_t k = 0; k < 3; ++k) {
    CAPTURE(k);
    rec.run();
    auto yv = y.download();
    test::check_close(yv, ref::dropout_forward(d, first + k, xv), 0, 0, "replayed y");
    test::check_close(dx.download(), yv, 0, 0, "backward of the same step uses the forward's mask");
    CHECK(step.download_u32()[0] == first + k + 1);
    if (!previous.empty()) {
      size_t differ = 0;
      for (size_t i = 0; i < yv.size(); ++i) differ += (yv[i] == 0) != (previous[i] == 0);
      CHECK(differ > yv.size() / 8);  // independent masks at p = 0.5 differ in ~half the places
    }
    previous = yv;
  }
  // Another seed, same step: another mask.
  auto other = ref::dropout_scale(params(0.5f, 8u), first, xv.size()), mine = ref::dropout_scale(d, first, xv.size());
  size_t differ = 0;
  for (size_t i = 0; i < mine.size(); ++i) differ += (mine[i] == 0) != (other[i] == 0);
  CHECK(differ > mine.size() / 8);
}

TEST_CASE("dropout keeps a fraction 1 - p, scaled by 1 / (1 - p)" * doctest::test_suite("dropout")) {
  const size_t n = 200000;
  for (float p : {0.05f, 0.3f, 0.5f, 0.8f}) {
    CAPTURE(p);
    auto s = ref::dropout_scale(params(p, 99u), 5, n);
    size_t kept = 0, wrong_scale = 0;
    for (float v : s) {
      kept += v != 0;
      wrong_scale += v != 0 && v != 1.0f / (1.0f - p);
    }
    CHECK(wrong_scale == 0);
    const double rate = double(kept) / n, sigma = std::sqrt(p * (1.0 - p) / n);
    CHECK(std::fabs(rate - (1.0 - p)) < 5 * sigma);
  }
}

TEST_CASE("dropout edge cases: p = 0 identity, p = 1 zero, evaluation identity" * doctest::test_suite("dropout")) {
  Context& ctx = test::ctx();
  const float inf = std::numeric_limits<float>::infinity();
  Tensor step = step_tensor(ctx, 3);
  std::vector<float> xv = test::random_vector(10, 24);
  xv[3] = inf;
  Tensor x(ctx, {10}), y0(ctx, {10}), y1(ctx, {10}), ye(ctx, {10}), dx0(ctx, {10}), dx1(ctx, {10}), dx1_acc(ctx, {10});
  x.upload(xv);
  auto old = test::random_vector(10, 25);
  dx1_acc.upload(old);
  Recording rec(ctx);
  dropout_forward(rec, params(0.f, 1u), step, x, y0, true);
  dropout_forward(rec, params(1.f, 1u), step, x, y1, true);
  dropout_forward(rec, params(0.5f, 1u), Tensor(), x, ye, false);  // evaluation: no step needed
  dropout_backward(rec, params(0.f, 1u), step, x, dx0, false);
  dropout_backward(rec, params(1.f, 1u), step, x, dx1, false);
  dropout_backward(rec, params(1.f, 1u), step, x, dx1_acc, true);
  rec.run();
  // Exact equality (the inf element too).
  CHECK(y0.download() == xv);   // p = 0 forward
  CHECK(dx0.download() == xv);  // p = 0 backward
  test::check_close(y1.download(), std::vector<float>(10, 0.f), 0, 0, "p = 1 forward (inf too)");
  test::check_close(dx1.download(), std::vector<float>(10, 0.f), 0, 0, "p = 1 backward");
  test::check_close(dx1_acc.download(), old, 0, 0, "p = 1 backward, accumulating: unchanged");
  CHECK(ye.download() == xv);  // evaluation
  test::check_close(ref::dropout_forward(params(1.f, 1u), 3, xv), std::vector<float>(10, 0.f), 0, 0, "p = 1 reference");
  CHECK(ref::dropout_forward(params(0.f, 1u), 3, xv) == xv);
}

TEST_CASE("dropout reference backward equals finite differences" * doctest::test_suite("dropout")) {
  const DropoutParams d = params(0.3f, 5u);
  auto xf = test::random_vector(50, 26);
  std::vector<double> x(xf.begin(), xf.end());
  auto wf = test::random_vector(50, 27);
  std::vector<double> w(wf.begin(), wf.end());
  auto loss = [&](const std::vector<double>& v) {
    auto y = ref::dropout_forward(d, 9, v);
    double s = 0;
    for (size_t i = 0; i < y.size(); ++i) s += y[i] * w[i];
    return s;
  };
  auto dx = ref::dropout_backward(d, 9, w);
  size_t dropped = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    std::vector<double> xp = x, xm = x;
    xp[i] += 1e-6;
    xm[i] -= 1e-6;
    CHECK(dx[i] == doctest::Approx((loss(xp) - loss(xm)) / 2e-6).epsilon(1e-6));
    dropped += dx[i] == 0;
  }
  CHECK(dropped > 0);  // the check saw both kinds of element
  CHECK(dropped < x.size());
}

TEST_CASE("dropout rejects bad p and step tensors" * doctest::test_suite("dropout")) {
  Context& ctx = test::ctx();
  Tensor x(ctx, {4}), y(ctx, {4}), wrong(ctx, {5}), step = step_tensor(ctx, 0), float_step(ctx, {1}),
      long_step(ctx, {2}, DType::U32);
  Recording rec(ctx);
  for (float p : {-0.1f, 1.5f, std::numeric_limits<float>::quiet_NaN()}) {
    CAPTURE(p);
    CHECK_THROWS_WITH_AS(dropout_forward(rec, params(p, 0), step, x, y, true), doctest::Contains("p must be in [0, 1]"),
                         Error);
  }
  CHECK_THROWS_AS(dropout_forward(rec, params(0.5f, 0), step, x, wrong, true), Error);
  CHECK_THROWS_WITH_AS(dropout_forward(rec, params(0.5f, 0), float_step, x, y, true), doctest::Contains("step"), Error);
  CHECK_THROWS_AS(dropout_backward(rec, params(0.5f, 0), long_step, x, y, false), Error);
  CHECK_THROWS_AS(dropout_advance(rec, float_step), Error);
  dropout_forward(rec, params(0.5f, 0), step, x, y, true);  // fine
}

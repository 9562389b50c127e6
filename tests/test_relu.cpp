// relu: GPU vs CPU reference (rtol 1e-6: exact ops), reference backward vs finite
// differences, accumulate, shape errors.
#include <cmath>
#include <limits>

#include "backend/error.h"
#include "nn/ops/relu.h"
#include "testutil.h"

using namespace vkqat;
using namespace vkqat::nn;

namespace {
std::vector<double> to_double(const std::vector<float>& v) { return {v.begin(), v.end()}; }

// Keeps values at least `gap` away from the kink at 0, so finite differences are clean.
std::vector<float> away_from_zero(std::vector<float> v, float gap) {
  for (auto& x : v)
    if (std::fabs(x) < gap) x = x < 0 ? -gap : gap;
  return v;
}
}  // namespace

TEST_CASE("relu forward and backward match the CPU reference" * doctest::test_suite("relu")) {
  Context& ctx = test::ctx();
  // Element counts divisible by 4 take the vec4 kernels, the others the float kernels.
  for (std::vector<int> shape : {std::vector<int>{1, 1, 1, 1}, {1, 3, 5, 3}, {2, 17, 7, 7}, {3, 1000}}) {
    CAPTURE(shape_str(shape));
    Tensor x(ctx, shape), y(ctx, shape), dy(ctx, shape), dx_from_x(ctx, shape), dx_from_y(ctx, shape);
    auto xv = test::random_vector(x.numel(), 1), dyv = test::random_vector(x.numel(), 2);
    auto old_dx = test::random_vector(x.numel(), 3);
    x.upload(xv);
    dy.upload(dyv);
    dx_from_y.upload(old_dx);
    Recording rec(ctx);
    relu_forward(rec, x, y);
    relu_backward(rec, x, dy, dx_from_x, false);
    relu_backward(rec, y, dy, dx_from_y, true);  // mask from the output, accumulating
    rec.run();
    auto want_y = ref::relu_forward(xv);
    auto want_dx = ref::relu_backward(xv, dyv);
    test::check_close(y.download(), want_y, 1e-6, 0, "relu y");
    test::check_close(dx_from_x.download(), want_dx, 1e-6, 0, "relu dx (mask from x)");
    std::vector<float> want_acc(want_dx.size());
    for (size_t i = 0; i < want_acc.size(); ++i) want_acc[i] = old_dx[i] + want_dx[i];
    test::check_close(dx_from_y.download(), want_acc, 1e-6, 1e-7, "relu dx (mask from y, accumulate)");
  }
}

namespace {
// backward(x, w) against central differences of the loss sum(forward(x) * w).
template <class Forward, class Backward>
void check_finite_differences(const std::vector<double>& x, const std::vector<double>& w, Forward forward,
                              Backward backward) {
  auto loss = [&](const std::vector<double>& v) {
    auto y = forward(v);
    double s = 0;
    for (size_t i = 0; i < y.size(); ++i) s += y[i] * w[i];
    return s;
  };
  auto dx = backward(x, w);
  for (size_t i = 0; i < x.size(); ++i) {
    std::vector<double> xp = x, xm = x;
    xp[i] += 1e-6;
    xm[i] -= 1e-6;
    CHECK(dx[i] == doctest::Approx((loss(xp) - loss(xm)) / 2e-6).epsilon(1e-6));
  }
}
}  // namespace

TEST_CASE("relu reference backward equals finite differences" * doctest::test_suite("relu")) {
  auto x = to_double(away_from_zero(test::random_vector(60, 4), 0.05f));
  auto w = to_double(test::random_vector(60, 5));
  check_finite_differences(
      x, w, [](const std::vector<double>& v) { return ref::relu_forward(v); },
      [](const std::vector<double>& v, const std::vector<double>& dy) { return ref::relu_backward(v, dy); });
}

TEST_CASE("relu rejects mismatched shapes" * doctest::test_suite("relu")) {
  Context& ctx = test::ctx();
  Tensor a(ctx, {2, 3}), b(ctx, {3, 2}), c(ctx, {2, 3}), labels(ctx, {2, 3}, DType::U32);
  Recording rec(ctx);
  CHECK_THROWS_AS(relu_forward(rec, a, b), Error);
  CHECK_THROWS_AS(relu_forward(rec, a, labels), Error);
  CHECK_THROWS_AS(relu_backward(rec, a, b, c, false), Error);
  CHECK_THROWS_AS(relu_backward(rec, a, c, b, false), Error);
}

// ---- ReLU6 -----------------------------------------------------------------------------

namespace {
// Random values over [-3, 9] (both kinks inside), with exact 0s and 6s sprinkled in.
std::vector<float> relu6_input(size_t n, uint32_t seed) {
  auto v = test::random_vector(n, seed, -3.f, 9.f);
  for (size_t i = 0; i < n; i += 5) v[i] = (i / 5) % 2 ? 6.f : 0.f;
  return v;
}
}  // namespace

TEST_CASE("relu6 forward and backward match the CPU reference" * doctest::test_suite("relu")) {
  Context& ctx = test::ctx();
  // Element counts divisible by 4 take the vec4 kernels, the others the float kernels.
  for (std::vector<int> shape : {std::vector<int>{1, 1, 1, 1}, {1, 3, 5, 3}, {2, 17, 7, 7}, {1, 4, 1, 1}, {3, 1000}}) {
    CAPTURE(shape_str(shape));
    Tensor x(ctx, shape), y(ctx, shape), dy(ctx, shape), dx(ctx, shape), dx_acc(ctx, shape);
    const size_t n = size_t(x.numel());
    auto xv = relu6_input(n, 11), dyv = test::random_vector(n, 12), old_dx = test::random_vector(n, 13);
    x.upload(xv);
    dy.upload(dyv);
    dx_acc.upload(old_dx);
    Recording rec(ctx);
    relu6_forward(rec, x, y);
    relu6_backward(rec, x, dy, dx, false);
    relu6_backward(rec, x, dy, dx_acc, true);
    rec.run();
    auto want_y = ref::relu6_forward(xv);
    auto want_dx = ref::relu6_backward(xv, dyv);
    test::check_close(y.download(), want_y, 0, 0, "relu6 y");
    test::check_close(dx.download(), want_dx, 0, 0, "relu6 dx");
    std::vector<float> want_acc(n);
    for (size_t i = 0; i < n; ++i) want_acc[i] = old_dx[i] + want_dx[i];
    test::check_close(dx_acc.download(), want_acc, 1e-6, 1e-7, "relu6 dx (accumulate)");
  }
}

TEST_CASE("relu6 edges: y at 0 and 6, gradient 0 at exactly 0 and 6 (torch's hardtanh rule), NaN" *
          doctest::test_suite("relu")) {
  Context& ctx = test::ctx();
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  for (int count : {8, 7}) {  // vec4 and float kernels
    CAPTURE(count);
    std::vector<float> xv{0.f, 6.f, -0.f, 5.999f, 1e-7f, inf, nan, -inf};
    xv.resize(size_t(count));
    Tensor x(ctx, {count}), y(ctx, {count}), dy(ctx, {count}), dx(ctx, {count});
    x.upload(xv);
    dy.upload(std::vector<float>(size_t(count), 1.f));
    Recording rec(ctx);
    relu6_forward(rec, x, y);
    relu6_backward(rec, x, dy, dx, false);
    rec.run();
    auto yv = y.download(), dxv = dx.download();
    CHECK(yv[0] == 0.f);
    CHECK(yv[1] == 6.f);
    CHECK(yv[3] == 5.999f);
    CHECK(yv[5] == 6.f);
    CHECK(dxv[0] == 0.f);  // x = 0
    CHECK(dxv[1] == 0.f);  // x = 6
    CHECK(dxv[2] == 0.f);  // x = -0
    CHECK(dxv[3] == 1.f);
    CHECK(dxv[4] == 1.f);
    CHECK(dxv[5] == 0.f);
    CHECK(std::isnan(yv[6]));  // NaN propagates, like torch
    CHECK(dxv[6] == 0.f);
    if (count == 8) CHECK(yv[7] == 0.f);
  }
}

TEST_CASE("relu6 reference backward equals finite differences" * doctest::test_suite("relu")) {
  // Keep x at least 0.05 away from both kinks (0 and 6).
  auto xf = test::random_vector(80, 14, -3.f, 9.f);
  for (auto& v : xf)
    for (float kink : {0.f, 6.f})
      if (std::fabs(v - kink) < 0.05f) v = v < kink ? kink - 0.05f : kink + 0.05f;
  auto x = to_double(xf), w = to_double(test::random_vector(80, 15));
  check_finite_differences(
      x, w, [](const std::vector<double>& v) { return ref::relu6_forward(v); },
      [](const std::vector<double>& v, const std::vector<double>& dy) { return ref::relu6_backward(v, dy); });
}

TEST_CASE("relu6 rejects mismatched shapes" * doctest::test_suite("relu")) {
  Context& ctx = test::ctx();
  Tensor a(ctx, {2, 3}), b(ctx, {3, 2}), c(ctx, {2, 3}), labels(ctx, {2, 3}, DType::U32);
  Recording rec(ctx);
  CHECK_THROWS_AS(relu6_forward(rec, a, b), Error);
  CHECK_THROWS_AS(relu6_forward(rec, a, labels), Error);
  CHECK_THROWS_AS(relu6_backward(rec, a, b, c, false), Error);
  CHECK_THROWS_AS(relu6_backward(rec, a, c, b, false), Error);
}

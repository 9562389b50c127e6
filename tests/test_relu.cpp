// relu: GPU vs CPU reference (rtol 1e-6: exact ops), reference backward vs finite
// differences, accumulate, shape errors.
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

TEST_CASE("relu reference backward equals finite differences" * doctest::test_suite("relu")) {
  auto x = to_double(away_from_zero(test::random_vector(60, 4), 0.05f));
  auto w = to_double(test::random_vector(60, 5));
  auto loss = [&](const std::vector<double>& v) {
    auto y = ref::relu_forward(v);
    double s = 0;
    for (size_t i = 0; i < y.size(); ++i) s += y[i] * w[i];
    return s;
  };
  auto dx = ref::relu_backward(x, w);
  for (size_t i = 0; i < x.size(); ++i) {
    std::vector<double> xp = x, xm = x;
    xp[i] += 1e-6;
    xm[i] -= 1e-6;
    CHECK(dx[i] == doctest::Approx((loss(xp) - loss(xm)) / 2e-6).epsilon(1e-6));
  }
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

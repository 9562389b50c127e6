// linear: GPU vs CPU reference (rtol 1e-4, atol 1e-5 * max|want|), finite differences of the
// reference backward (in double), accumulate, shape errors.
#include <algorithm>

#include "backend/error.h"
#include "nn/ops/linear.h"
#include "testutil.h"

using namespace vkqat;
using namespace vkqat::nn;

namespace {
double max_abs(const std::vector<float>& v) {
  double m = 0;
  for (float x : v) m = std::max(m, double(std::fabs(x)));
  return m;
}
void check(const std::vector<float>& got, const std::vector<float>& want, const std::string& what) {
  test::check_close(got, want, 1e-4, 1e-5 * std::max(max_abs(want), 1e-3), what);
}
std::vector<double> to_double(const std::vector<float>& v) { return {v.begin(), v.end()}; }
}  // namespace

TEST_CASE("linear forward and backward match the reference" * doctest::test_suite("linear")) {
  Context& ctx = test::ctx();
  struct Case { int n, in, out; };
  for (Case c : {Case{1, 1, 1}, Case{1, 17, 3}, Case{5, 7, 10}, Case{128, 64, 10}, Case{33, 65, 17}})
    for (bool accumulate : {false, true}) {
      CAPTURE(c.n);
      CAPTURE(c.in);
      CAPTURE(c.out);
      CAPTURE(accumulate);
      auto xv = test::random_vector(size_t(c.n) * c.in, 70), wv = test::random_vector(size_t(c.out) * c.in, 71);
      auto bv = test::random_vector(c.out, 72), dyv = test::random_vector(size_t(c.n) * c.out, 73);
      auto dx0 = test::random_vector(xv.size(), 74), dw0 = test::random_vector(wv.size(), 75);
      auto db0 = test::random_vector(bv.size(), 76);
      Tensor x(ctx, {c.n, c.in}), w(ctx, {c.out, c.in}), b(ctx, {c.out}), y(ctx, {c.n, c.out}),
          dy(ctx, {c.n, c.out}), dx(ctx, {c.n, c.in}), dw(ctx, {c.out, c.in}), db(ctx, {c.out});
      x.upload(xv);
      w.upload(wv);
      b.upload(bv);
      dy.upload(dyv);
      dx.upload(dx0);
      dw.upload(dw0);
      db.upload(db0);
      Recording rec(ctx);
      linear_forward(rec, x, w, b, y);
      // dx accumulates when accumulate, the parameter gradients when not: both flags exercised.
      linear_backward(rec, x, w, dy, &dx, accumulate, dw, db, !accumulate);
      rec.run();
      std::vector<float> dx_want, dw_want, db_want;
      ref::linear_backward(xv, wv, dyv, c.n, c.in, c.out, dx_want, dw_want, db_want);
      if (accumulate) {
        for (size_t i = 0; i < dx_want.size(); ++i) dx_want[i] += dx0[i];
      } else {
        for (size_t i = 0; i < dw_want.size(); ++i) dw_want[i] += dw0[i];
        for (size_t i = 0; i < db_want.size(); ++i) db_want[i] += db0[i];
      }
      check(y.download(), ref::linear_forward(xv, wv, bv, c.n, c.in, c.out), "y");
      check(dx.download(), dx_want, "dx");
      check(dw.download(), dw_want, "dweight");
      check(db.download(), db_want, "dbias");
    }
}

TEST_CASE("linear accepts a pooled [N, C, 1, 1] input and can skip dx" * doctest::test_suite("linear")) {
  Context& ctx = test::ctx();
  auto xv = test::random_vector(6 * 4, 77), wv = test::random_vector(3 * 4, 78), bv = test::random_vector(3, 79);
  auto dyv = test::random_vector(6 * 3, 80);
  Tensor x(ctx, {6, 4, 1, 1}), w(ctx, {3, 4}), b(ctx, {3}), y(ctx, {6, 3}), dy(ctx, {6, 3}), dw(ctx, {3, 4}),
      db(ctx, {3});
  x.upload(xv);
  w.upload(wv);
  b.upload(bv);
  dy.upload(dyv);
  Recording rec(ctx);
  linear_forward(rec, x, w, b, y);
  linear_backward(rec, x, w, dy, nullptr, false, dw, db, false);
  rec.run();
  std::vector<float> dx_want, dw_want, db_want;
  ref::linear_backward(xv, wv, dyv, 6, 4, 3, dx_want, dw_want, db_want);
  check(y.download(), ref::linear_forward(xv, wv, bv, 6, 4, 3), "y");
  check(dw.download(), dw_want, "dweight");
  check(db.download(), db_want, "dbias");
}

TEST_CASE("linear reference backward equals finite differences" * doctest::test_suite("linear")) {
  const int n = 3, in = 5, out = 4;
  auto x = to_double(test::random_vector(n * in, 81)), w = to_double(test::random_vector(out * in, 82));
  auto b = to_double(test::random_vector(out, 83)), g = to_double(test::random_vector(n * out, 84));
  auto loss = [&]() {
    auto y = ref::linear_forward(x, w, b, n, in, out);
    double s = 0;
    for (size_t i = 0; i < y.size(); ++i) s += y[i] * g[i];
    return s;
  };
  auto fd = [&](std::vector<double>& v, size_t i) {
    double orig = v[i];
    v[i] = orig + 1e-6;
    double lp = loss();
    v[i] = orig - 1e-6;
    double lm = loss();
    v[i] = orig;
    return (lp - lm) / 2e-6;
  };
  std::vector<double> dx, dw, db;
  ref::linear_backward(x, w, g, n, in, out, dx, dw, db);
  for (size_t i = 0; i < x.size(); ++i) CHECK(dx[i] == doctest::Approx(fd(x, i)).epsilon(1e-6));
  for (size_t i = 0; i < w.size(); ++i) CHECK(dw[i] == doctest::Approx(fd(w, i)).epsilon(1e-6));
  for (size_t i = 0; i < b.size(); ++i) CHECK(db[i] == doctest::Approx(fd(b, i)).epsilon(1e-6));
}

TEST_CASE("linear rejects bad shapes" * doctest::test_suite("linear")) {
  Context& ctx = test::ctx();
  Tensor x(ctx, {4, 8}), w(ctx, {3, 8}), b(ctx, {3}), y(ctx, {4, 3}), w_bad(ctx, {3, 7}), b_bad(ctx, {4}),
      y_bad(ctx, {3, 4}), dx_bad(ctx, {4, 7});
  Recording rec(ctx);
  CHECK_THROWS_AS(linear_forward(rec, x, w_bad, b, y), Error);
  CHECK_THROWS_AS(linear_forward(rec, x, w, b_bad, y), Error);
  CHECK_THROWS_AS(linear_forward(rec, x, w, b, y_bad), Error);
  CHECK_THROWS_AS(linear_backward(rec, x, w, y_bad, nullptr, false, w, b, false), Error);
  CHECK_THROWS_AS(linear_backward(rec, x, w, y, &dx_bad, false, w, b, false), Error);
  CHECK_THROWS_AS(linear_backward(rec, x, w, y, nullptr, false, w_bad, b, false), Error);
  CHECK_THROWS_AS(linear_backward(rec, x, w, y, nullptr, false, w, b_bad, false), Error);
}

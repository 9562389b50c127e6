// add: GPU vs CPU reference (rtol 1e-6: one rounding), with and without the fused ReLU; backward
// pass-through with both accumulate modes; accumulate(); finite differences of the reference; shape errors.
#include <algorithm>

#include "backend/error.h"
#include "nn/ops/add.h"
#include "testutil.h"

using namespace vkqat;
using namespace vkqat::nn;

TEST_CASE("add forward/backward and accumulate match the CPU reference" * doctest::test_suite("add")) {
  Context& ctx = test::ctx();
  // Element counts divisible by 4 take the vec4 kernels, the others the float kernels.
  for (std::vector<int> shape : {std::vector<int>{1, 1, 1, 1}, {1, 3, 5, 3}, {2, 17, 7, 7}, {1001}, {4, 16, 5, 5}}) {
    CAPTURE(shape_str(shape));
    size_t n = 1;
    for (int d : shape) n *= size_t(d);
    Tensor a(ctx, shape), b(ctx, shape), y(ctx, shape), y_relu(ctx, shape), dy(ctx, shape), da(ctx, shape),
        db(ctx, shape), acc_dst(ctx, shape);
    auto av = test::random_vector(n, 10), bv = test::random_vector(n, 11), dyv = test::random_vector(n, 12);
    auto old_db = test::random_vector(n, 13), old_acc = test::random_vector(n, 14);
    a.upload(av);
    b.upload(bv);
    dy.upload(dyv);
    da.upload(test::random_vector(n, 15));  // overwritten
    db.upload(old_db);
    acc_dst.upload(old_acc);
    Recording rec(ctx);
    add_forward(rec, a, b, y);
    add_forward(rec, a, b, y_relu, /*relu=*/true);
    add_backward(rec, dy, da, false, db, true);
    accumulate(rec, a, acc_dst, -0.5f);
    rec.run();
    const std::vector<float> want_y = ref::add_forward(av, bv);
    test::check_close(y.download(), want_y, 1e-6, 1e-7, "add y");
    std::vector<float> want_relu(n);
    for (size_t i = 0; i < n; ++i) want_relu[i] = std::max(want_y[i], 0.f);
    test::check_close(y_relu.download(), want_relu, 1e-6, 1e-7, "add y = relu(a + b)");
    test::check_close(da.download(), dyv, 0, 0, "add da (overwrite)");
    std::vector<float> want_db(n), want_acc(n);
    for (size_t i = 0; i < n; ++i) {
      want_db[i] = old_db[i] + dyv[i];
      want_acc[i] = old_acc[i] - 0.5f * av[i];
    }
    test::check_close(db.download(), want_db, 1e-6, 1e-7, "add db (accumulate)");
    test::check_close(acc_dst.download(), want_acc, 1e-6, 1e-7, "accumulate dst += -0.5 src");
  }
}

TEST_CASE("add backward is the finite-difference gradient of the reference" * doctest::test_suite("add")) {
  // loss = sum(w * (a + b)): d loss / d a = d loss / d b = w, which add_backward passes through.
  auto a = test::random_vector(20, 16), b = test::random_vector(20, 17), w = test::random_vector(20, 18);
  std::vector<double> ad(a.begin(), a.end()), bd(b.begin(), b.end());
  auto loss = [&](const std::vector<double>& x, const std::vector<double>& z) {
    auto y = ref::add_forward(x, z);
    double s = 0;
    for (size_t i = 0; i < y.size(); ++i) s += y[i] * w[i];
    return s;
  };
  for (size_t i = 0; i < a.size(); ++i) {
    auto ap = ad, am = ad, bp = bd, bm = bd;
    ap[i] += 1e-6, am[i] -= 1e-6, bp[i] += 1e-6, bm[i] -= 1e-6;
    CHECK((loss(ap, bd) - loss(am, bd)) / 2e-6 == doctest::Approx(w[i]).epsilon(1e-6));
    CHECK((loss(ad, bp) - loss(ad, bm)) / 2e-6 == doctest::Approx(w[i]).epsilon(1e-6));
  }
}

TEST_CASE("add rejects mismatched shapes" * doctest::test_suite("add")) {
  Context& ctx = test::ctx();
  Tensor a(ctx, {2, 3}), b(ctx, {6}), c(ctx, {2, 3}), d(ctx, {2, 3});
  Recording rec(ctx);
  CHECK_THROWS_AS(add_forward(rec, a, b, c), Error);
  CHECK_THROWS_AS(add_forward(rec, a, c, b), Error);
  CHECK_THROWS_AS(add_backward(rec, a, b, false, c, false), Error);
  CHECK_THROWS_AS(add_backward(rec, a, c, false, c, false), Error);  // da and db alias
  CHECK_THROWS_AS(accumulate(rec, a, b), Error);
  add_backward(rec, a, c, false, d, false);  // fine
}

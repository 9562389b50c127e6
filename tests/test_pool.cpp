// pool: global average pool and max pool 2x2/2 (floor mode) vs the CPU reference
// (rtol 1e-4; max pool is exact), tie rule, finite differences of the reference backward
// (in double), accumulate, shape errors.
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "backend/error.h"
#include "nn/ops/pool.h"
#include "testutil.h"

using namespace vkqat;
using namespace vkqat::nn;

namespace {
size_t numel(const std::vector<int>& s) { return size_t(s[0]) * s[1] * s[2] * s[3]; }
std::vector<double> to_double(const std::vector<float>& v) { return {v.begin(), v.end()}; }

// d/dx of sum(f(x) * w), central differences in double.
std::vector<double> finite_diff(const std::function<std::vector<double>(const std::vector<double>&)>& f,
                                std::vector<double> x, const std::vector<double>& w) {
  auto loss = [&](const std::vector<double>& v) {
    auto y = f(v);
    double s = 0;
    for (size_t i = 0; i < y.size(); ++i) s += y[i] * w[i];
    return s;
  };
  std::vector<double> g(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    double orig = x[i];
    x[i] = orig + 1e-6;
    double lp = loss(x);
    x[i] = orig - 1e-6;
    double lm = loss(x);
    x[i] = orig;
    g[i] = (lp - lm) / 2e-6;
  }
  return g;
}
}  // namespace

TEST_CASE("global average pool matches the reference" * doctest::test_suite("pool")) {
  Context& ctx = test::ctx();
  // H*W % 4 == 0 takes the vec4 kernels.
  for (std::vector<int> shape : {std::vector<int>{1, 1, 1, 1}, {1, 3, 5, 3}, {2, 17, 7, 7}, {4, 16, 28, 28}})
    for (bool accumulate : {false, true}) {
      CAPTURE(shape_str(shape));
      std::vector<int> pooled{shape[0], shape[1]};
      size_t n = numel(shape), planes = size_t(shape[0]) * shape[1];
      auto xv = test::random_vector(n, 60), dyv = test::random_vector(planes, 61), dx0 = test::random_vector(n, 62);
      Tensor x(ctx, shape), y(ctx, pooled), dy(ctx, pooled), dx(ctx, shape);
      x.upload(xv);
      dy.upload(dyv);
      dx.upload(dx0);
      Recording rec(ctx);
      global_avg_pool_forward(rec, x, y);
      global_avg_pool_backward(rec, dy, dx, accumulate);
      rec.run();
      test::check_close(y.download(), ref::global_avg_pool_forward(xv, shape), 1e-4, 1e-6, "gavg y");
      auto dx_want = ref::global_avg_pool_backward(dyv, shape);
      if (accumulate)
        for (size_t i = 0; i < n; ++i) dx_want[i] += dx0[i];
      test::check_close(dx.download(), dx_want, 1e-4, 1e-6, "gavg dx");
    }
}

TEST_CASE("max pool 2x2 matches the reference, odd sizes dropped" * doctest::test_suite("pool")) {
  Context& ctx = test::ctx();
  // W % 4 == 0 takes the vec4 kernels ({3, 2, 3, 8}: with an odd row dropped).
  for (std::vector<int> shape : {std::vector<int>{1, 1, 2, 2}, {1, 3, 5, 3}, {2, 17, 7, 7}, {3, 2, 3, 8},
                                 {4, 16, 28, 28}})
    for (bool accumulate : {false, true}) {
      CAPTURE(shape_str(shape));
      std::vector<int> out{shape[0], shape[1], shape[2] / 2, shape[3] / 2};
      size_t n = numel(shape);
      auto xv = test::random_vector(n, 63), dyv = test::random_vector(numel(out), 64), dx0 = test::random_vector(n, 65);
      Tensor x(ctx, shape), y(ctx, out), dy(ctx, out), dx(ctx, shape);
      x.upload(xv);
      dy.upload(dyv);
      dx.upload(dx0);
      Recording rec(ctx);
      maxpool2x2_forward(rec, x, y);
      maxpool2x2_backward(rec, x, dy, dx, accumulate);
      rec.run();
      test::check_close(y.download(), ref::maxpool2x2_forward(xv, shape), 0, 0, "maxpool y");
      auto dx_want = ref::maxpool2x2_backward(xv, dyv, shape);
      if (accumulate)
        for (size_t i = 0; i < n; ++i) dx_want[i] += dx0[i];
      test::check_close(dx.download(), dx_want, 1e-6, 1e-7, "maxpool dx");
    }
}

TEST_CASE("max pool ties go to the first maximum, like PyTorch" * doctest::test_suite("pool")) {
  Context& ctx = test::ctx();
  // Windows: all equal; max twice in the bottom row; max at top-right and bottom-left;
  // then (width 8, the vec4 kernels) max at all but the top-left.
  std::vector<float> xv{1, 1, 0, 0, 0, 2, 0, 4,  //
                        1, 1, 3, 3, 2, 0, 4, 4};
  std::vector<float> dyv{10, 20, 30, 40};
  std::vector<float> dx_want{10, 0, 0, 0, 0, 30, 0, 40,  //
                             0, 0, 20, 0, 0, 0, 0, 0};
  for (int w : {6, 8}) {
    CAPTURE(w);
    std::vector<int> shape{1, 1, 2, w};
    std::vector<float> x_in, dx_exp;
    for (int r = 0; r < 2; ++r)
      for (int c = 0; c < w; ++c) x_in.push_back(xv[r * 8 + c]), dx_exp.push_back(dx_want[r * 8 + c]);
    std::vector<float> dy_in(dyv.begin(), dyv.begin() + w / 2), y_want{1, 3, 2, 4};
    y_want.resize(size_t(w / 2));
    Tensor x(ctx, shape), y(ctx, {1, 1, 1, w / 2}), dy(ctx, {1, 1, 1, w / 2}), dx(ctx, shape);
    x.upload(x_in);
    dy.upload(dy_in);
    Recording rec(ctx);
    maxpool2x2_forward(rec, x, y);
    maxpool2x2_backward(rec, x, dy, dx, false);
    rec.run();
    test::check_close(y.download(), y_want, 0, 0, "tie y");
    test::check_close(dx.download(), dx_exp, 0, 0, "tie dx");
    test::check_close(ref::maxpool2x2_backward(x_in, dy_in, shape), dx_exp, 0, 0, "tie dx reference");
  }
}

TEST_CASE("pool reference backward equals finite differences" * doctest::test_suite("pool")) {
  for (std::vector<int> shape : {std::vector<int>{2, 3, 3, 2}, {1, 2, 5, 3}}) {
    CAPTURE(shape_str(shape));
    size_t n = numel(shape);
    std::vector<int> out{shape[0], shape[1], shape[2] / 2, shape[3] / 2};
    auto x = to_double(test::random_vector(n, 66));
    auto w_avg = to_double(test::random_vector(size_t(shape[0]) * shape[1], 67));
    auto w_max = to_double(test::random_vector(numel(out), 68));
    auto fd_avg = finite_diff([&](const std::vector<double>& v) { return ref::global_avg_pool_forward(v, shape); },
                              x, w_avg);
    auto fd_max = finite_diff([&](const std::vector<double>& v) { return ref::maxpool2x2_forward(v, shape); },
                              x, w_max);
    auto bw_avg = ref::global_avg_pool_backward(w_avg, shape);
    auto bw_max = ref::maxpool2x2_backward(x, w_max, shape);
    for (size_t i = 0; i < n; ++i) {
      CHECK(bw_avg[i] == doctest::Approx(fd_avg[i]).epsilon(1e-6));
      CHECK(bw_max[i] == doctest::Approx(fd_max[i]).epsilon(1e-6));
    }
  }
}

TEST_CASE("pool rejects bad shapes" * doctest::test_suite("pool")) {
  Context& ctx = test::ctx();
  Tensor x(ctx, {2, 3, 5, 5}), flat(ctx, {2, 3}), wrong(ctx, {3, 2}), y(ctx, {2, 3, 2, 2}),
      y_ceil(ctx, {2, 3, 3, 3}), tiny(ctx, {2, 3, 1, 4}), tiny_y(ctx, {2, 3, 1, 2});
  Recording rec(ctx);
  CHECK_THROWS_AS(global_avg_pool_forward(rec, flat, flat), Error);
  CHECK_THROWS_AS(global_avg_pool_forward(rec, x, wrong), Error);
  CHECK_THROWS_AS(global_avg_pool_backward(rec, wrong, x, false), Error);
  CHECK_THROWS_AS(maxpool2x2_forward(rec, x, y_ceil), Error);
  CHECK_THROWS_AS(maxpool2x2_forward(rec, tiny, tiny_y), Error);
  CHECK_THROWS_AS(maxpool2x2_backward(rec, x, y_ceil, x, false), Error);
  CHECK_THROWS_AS(maxpool2x2_backward(rec, x, y, y, false), Error);
  maxpool2x2_forward(rec, x, y);  // fine
}

// ---- general max pool (k x k, stride, pad) ----------------------------------------------

namespace {
Pool2dShape pool_shape(int n, int c, int h, int w, int k, int stride, int pad) {
  Pool2dShape s;
  s.n = n, s.c = c, s.h = h, s.w = w, s.k = k, s.stride = stride, s.pad = pad;
  return s;
}
}  // namespace

TEST_CASE("max pool 2d matches the reference on awkward shapes, with and without ties" *
          doctest::test_suite("pool")) {
  Context& ctx = test::ctx();
  // torchvision's 3x3/s2/p1 stem pool, overlapping stride-1 windows, 1x1 images, batch 1,
  // odd sizes, a 5x5/s3/p2 window, and a shape big enough for several workgroups.
  for (Pool2dShape s : {pool_shape(1, 1, 1, 1, 1, 1, 0), pool_shape(1, 1, 1, 1, 3, 2, 1), pool_shape(2, 3, 7, 7, 3, 2, 1),
                        pool_shape(1, 5, 8, 6, 3, 2, 1), pool_shape(2, 3, 9, 5, 3, 1, 1), pool_shape(1, 2, 6, 7, 2, 2, 0),
                        pool_shape(3, 4, 11, 13, 5, 3, 2), pool_shape(2, 16, 28, 28, 3, 2, 1),
                        pool_shape(1, 3, 2, 9, 2, 1, 1)})
    for (bool ties : {false, true})
      for (bool accumulate : {false, true}) {
        CAPTURE(s.str());
        CAPTURE(ties);
        CAPTURE(accumulate);
        s.validate();
        const size_t n = numel(s.x_shape()), m = numel(s.y_shape());
        auto xv = test::random_vector(n, 70, ties ? 0.f : -1.f, ties ? 3.f : 1.f);
        if (ties)  // three values only: most windows hold ties, across overlapping windows too
          for (auto& v : xv) v = std::floor(v);
        auto dyv = test::random_vector(m, 71), dx0 = test::random_vector(n, 72);
        Tensor x(ctx, s.x_shape()), y(ctx, s.y_shape()), dy(ctx, s.y_shape()), dx(ctx, s.x_shape());
        x.upload(xv);
        dy.upload(dyv);
        dx.upload(dx0);
        Recording rec(ctx);
        maxpool2d_forward(rec, s, x, y);
        maxpool2d_backward(rec, s, x, dy, dx, accumulate);
        rec.run();
        test::check_close(y.download(), ref::maxpool2d_forward(s, xv), 0, 0, "maxpool2d y");
        auto dx_want = ref::maxpool2d_backward(s, xv, dyv);
        if (accumulate)
          for (size_t i = 0; i < n; ++i) dx_want[i] += dx0[i];
        // The shader adds each element's windows in the reference's order: exact unless accumulating.
        test::check_close(dx.download(), dx_want, accumulate ? 1e-6 : 0, accumulate ? 1e-7 : 0, "maxpool2d dx");
      }
}

TEST_CASE("max pool 2d with k2 s2 p0 equals max pool 2x2" * doctest::test_suite("pool")) {
  Context& ctx = test::ctx();
  for (std::vector<int> shape : {std::vector<int>{1, 3, 5, 3}, {2, 4, 7, 8}}) {
    CAPTURE(shape_str(shape));
    Pool2dShape s = pool_shape(shape[0], shape[1], shape[2], shape[3], 2, 2, 0);
    auto xv = test::random_vector(numel(shape), 73, 0.f, 2.f);
    for (auto& v : xv) v = std::floor(v);  // ties
    auto dyv = test::random_vector(numel(s.y_shape()), 74);
    Tensor x(ctx, shape), y(ctx, s.y_shape()), y2(ctx, s.y_shape()), dy(ctx, s.y_shape()), dx(ctx, shape),
        dx2(ctx, shape);
    x.upload(xv);
    dy.upload(dyv);
    Recording rec(ctx);
    maxpool2d_forward(rec, s, x, y);
    maxpool2x2_forward(rec, x, y2);
    maxpool2d_backward(rec, s, x, dy, dx, false);
    maxpool2x2_backward(rec, x, dy, dx2, false);
    rec.run();
    test::check_close(y.download(), y2.download(), 0, 0, "general vs 2x2 y");
    test::check_close(dx.download(), dx2.download(), 0, 0, "general vs 2x2 dx");
  }
}

TEST_CASE("max pool 2d: padding never wins, NaN wins, -inf inputs" * doctest::test_suite("pool")) {
  Context& ctx = test::ctx();
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  // 3x3 image, 3x3/s2/p1 windows: 2x2 outputs, each window a 2x2 corner of the image.
  Pool2dShape s = pool_shape(1, 1, 3, 3, 3, 2, 1);
  std::vector<float> xv{-5, -7, -inf,  //
                        -6, nan, -inf,  //
                        -9, -8, -inf};
  Tensor x(ctx, s.x_shape()), y(ctx, s.y_shape()), dy(ctx, s.y_shape()), dx(ctx, s.x_shape());
  x.upload(xv);
  dy.upload({1, 2, 3, 4});
  Recording rec(ctx);
  maxpool2d_forward(rec, s, x, y);
  maxpool2d_backward(rec, s, x, dy, dx, false);
  rec.run();
  auto yv = y.download(), dxv = dx.download();
  for (int i = 0; i < 4; ++i) CHECK(std::isnan(yv[size_t(i)]));  // every window holds the NaN
  std::vector<float> dx_want{0, 0, 0, 0, 10, 0, 0, 0, 0};
  test::check_close(dxv, dx_want, 0, 0, "NaN takes every window's gradient");
  test::check_close(ref::maxpool2d_backward(s, xv, std::vector<float>{1, 2, 3, 4}), dx_want, 0, 0,
                    "reference NaN rule");
  // All -inf: the first element of each clipped window wins (padding is not an element).
  std::vector<float> all_inf(9, -inf);
  x.upload(all_inf);
  rec.run();
  yv = y.download();
  for (float v : yv) CHECK(v == -inf);
  test::check_close(dx.download(), {1, 2, 0, 3, 4, 0, 0, 0, 0}, 0, 0, "-inf windows: first element");
}

TEST_CASE("max pool 2d reference backward equals finite differences" * doctest::test_suite("pool")) {
  for (Pool2dShape s : {pool_shape(2, 2, 5, 6, 3, 2, 1), pool_shape(1, 2, 5, 4, 3, 1, 1), pool_shape(1, 1, 1, 1, 3, 2, 1)}) {
    CAPTURE(s.str());
    auto x = to_double(test::random_vector(numel(s.x_shape()), 75));  // distinct values: no ties
    auto w = to_double(test::random_vector(numel(s.y_shape()), 76));
    auto fd = finite_diff([&](const std::vector<double>& v) { return ref::maxpool2d_forward(s, v); }, x, w);
    auto bw = ref::maxpool2d_backward(s, x, w);
    for (size_t i = 0; i < x.size(); ++i) CHECK(bw[i] == doctest::Approx(fd[i]).epsilon(1e-6));
  }
}

TEST_CASE("max pool 2d rejects bad shapes, naming the field" * doctest::test_suite("pool")) {
  Context& ctx = test::ctx();
  auto fails_with = [](Pool2dShape s, const char* what) {
    CAPTURE(what);
    try {
      s.validate();
      FAIL("no error");
    } catch (const Error& e) {
      CHECK(std::string(e.what()).find(what) != std::string::npos);
    }
  };
  fails_with(pool_shape(1, 1, 4, 4, 3, 2, 2), "pad");      // pad > k / 2
  fails_with(pool_shape(1, 1, 4, 4, 3, 0, 1), "stride");   // stride 0
  fails_with(pool_shape(1, 1, 4, 4, 0, 1, 0), "kernel");   // k 0
  fails_with(pool_shape(1, 1, 2, 4, 5, 1, 1), "bigger");   // window larger than the padded input
  fails_with(pool_shape(0, 1, 4, 4, 2, 2, 0), "n, c, h, w");
  Pool2dShape s = pool_shape(2, 3, 7, 7, 3, 2, 1);
  Tensor x(ctx, s.x_shape()), y(ctx, s.y_shape()), wrong(ctx, {2, 3, 3, 3});
  Recording rec(ctx);
  CHECK_THROWS_AS(maxpool2d_forward(rec, s, x, wrong), Error);
  CHECK_THROWS_AS(maxpool2d_forward(rec, s, wrong, y), Error);
  CHECK_THROWS_AS(maxpool2d_backward(rec, s, x, wrong, x, false), Error);
  CHECK_THROWS_AS(maxpool2d_backward(rec, s, x, y, y, false), Error);
  maxpool2d_forward(rec, s, x, y);  // fine
}

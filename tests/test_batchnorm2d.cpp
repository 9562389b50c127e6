// batchnorm2d: GPU vs CPU reference (rtol 1e-4, atol 1e-5 * max|want|), running-stat update
// vs PyTorch's formula, eval mode, backward (plain and fused ReLU, accumulate), finite
// differences of the reference backward (in double), shape errors.
#include <algorithm>

#include "backend/error.h"
#include "nn/ops/batchnorm2d.h"
#include "nn/ops/relu.h"
#include "bn_kernel_configs.h"
#include "testutil.h"

using namespace vkqat;
using namespace vkqat::nn;

namespace {
constexpr double kRtol = 1e-4, kAtolScale = 1e-5;

double max_abs(const std::vector<float>& v) {
  double m = 0;
  for (float x : v) m = std::max(m, double(std::fabs(x)));
  return m;
}

void check_bn(const std::vector<float>& got, const std::vector<float>& want, const std::string& what) {
  test::check_close(got, want, kRtol, kAtolScale * std::max(max_abs(want), 1e-3), what);
}

std::vector<double> to_double(const std::vector<float>& v) { return {v.begin(), v.end()}; }

size_t numel(const std::vector<int>& s) { return size_t(s[0]) * s[1] * s[2] * s[3]; }

// Random activations with a per-channel offset and spread, like a conv output.
std::vector<float> activations(const std::vector<int>& s, uint32_t seed, float offset, float spread) {
  return test::random_vector(numel(s), seed, offset - spread, offset + spread);
}

// H*W % 4 == 0 takes the vec4 kernels, the others the float kernels.
const std::vector<std::vector<int>> kShapes = {
    {4, 3, 1, 1},    // 1x1 images
    {1, 17, 5, 3},   // batch 1, odd channel count and sizes
    {3, 1, 7, 7},    // one channel
    {70, 3, 2, 2},   // vec4, one vec4 per plane: a workgroup step spans many planes
    {8, 16, 14, 14}, // vec4, a realistic block (M = 1568 per channel)
    {24, 2, 31, 33}, // large channels (M = 24552), not a multiple of any chunk
};
}  // namespace

TEST_CASE("batchnorm2d training forward matches the reference and PyTorch's running stats" *
          doctest::test_suite("batchnorm2d")) {
  Context& ctx = test::ctx();
  for (const auto& config : test::kBnKernelConfigs)
  for (const auto& shape : kShapes)
    for (bool relu : {false, true}) {
      CAPTURE(shape_str(shape));
      CAPTURE(config.str());
      test::ScopedBnKernelConfig scoped(config);
      CAPTURE(relu);
      int c = shape[1];
      // Offset 10 with spread 0.5 would lose ~1e-4 of the variance to cancellation in a naive
      // E[x^2] - E[x]^2 in fp32; the shader's shifted sums must not.
      auto xv = activations(shape, 20, 10.f, 0.5f);
      auto gv = test::random_vector(c, 21, 0.5f, 1.5f), bv = test::random_vector(c, 22);
      auto rm0 = test::random_vector(c, 23), rv0 = test::random_vector(c, 24, 0.5f, 2.f);
      Tensor x(ctx, shape), y(ctx, shape), gamma(ctx, {c}), beta(ctx, {c}), rm(ctx, {c}), rv(ctx, {c}),
          saved_mean(ctx, {c}), saved_invstd(ctx, {c});
      x.upload(xv);
      gamma.upload(gv);
      beta.upload(bv);
      rm.upload(rm0);
      rv.upload(rv0);
      Recording rec(ctx);
      batchnorm2d_forward_train(rec, x, gamma, beta, rm, rv, saved_mean, saved_invstd, y, 1e-5f, 0.1f, relu);
      rec.run();

      std::vector<float> rm_want = rm0, rv_want = rv0, mean_want, invstd_want;
      auto y_want = ref::batchnorm2d_forward_train(xv, shape, gv, bv, rm_want, rv_want, mean_want, invstd_want,
                                                   1e-5, 0.1, relu);
      check_bn(y.download(), y_want, "y");
      check_bn(saved_mean.download(), mean_want, "saved_mean");
      check_bn(saved_invstd.download(), invstd_want, "saved_invstd");
      check_bn(rm.download(), rm_want, "running_mean");
      check_bn(rv.download(), rv_want, "running_var");

      // PyTorch's update, spelled out independently of the reference: momentum 0.1,
      // running_var takes the unbiased variance. Replaying the recording applies it again.
      rec.run();
      size_t m = size_t(shape[0]) * shape[2] * shape[3];
      std::vector<float> rm2(c), rv2(c);
      for (int ch = 0; ch < c; ++ch) {
        double sum = 0, sq = 0;
        for (int n = 0; n < shape[0]; ++n)
          for (size_t i = 0; i < size_t(shape[2]) * shape[3]; ++i) sum += xv[(size_t(n) * c + ch) * shape[2] * shape[3] + i];
        double mean = sum / double(m);
        for (int n = 0; n < shape[0]; ++n)
          for (size_t i = 0; i < size_t(shape[2]) * shape[3]; ++i) {
            double d = xv[(size_t(n) * c + ch) * shape[2] * shape[3] + i] - mean;
            sq += d * d;
          }
        double r1m = 0.9 * rm0[ch] + 0.1 * mean, r1v = 0.9 * rv0[ch] + 0.1 * sq / double(m - 1);
        rm2[ch] = float(0.9 * r1m + 0.1 * mean);
        rv2[ch] = float(0.9 * r1v + 0.1 * sq / double(m - 1));
      }
      check_bn(rm.download(), rm2, "running_mean after two steps");
      check_bn(rv.download(), rv2, "running_var after two steps");
    }
}

TEST_CASE("batchnorm2d split statistics of large-mean channels are as accurate as one workgroup's" *
          doctest::test_suite("batchnorm2d")) {
  Context& ctx = test::ctx();
  // |mean| / std of 2000 and 30000: a naive E[x^2] - E[x]^2 in fp32 would lose the variance.
  const std::vector<int> shape{32, 2, 32, 32};
  const size_t plane = 32 * 32;
  std::vector<float> xv = activations(shape, 60, 0.f, 1.f);
  for (int n = 0; n < 32; ++n)
    for (size_t i = 0; i < plane; ++i) {
      xv[(size_t(n) * 2 + 0) * plane + i] = 1000.f + xv[(size_t(n) * 2 + 0) * plane + i];
      xv[(size_t(n) * 2 + 1) * plane + i] = -300.f + 0.01f * xv[(size_t(n) * 2 + 1) * plane + i];
    }
  std::vector<float> ones(2, 1.f), zeros(2, 0.f), rm = zeros, rv = ones, mean_want, invstd_want;
  ref::batchnorm2d_forward_train(xv, shape, ones, zeros, rm, rv, mean_want, invstd_want, 1e-5, 0.1, false);
  // The worst relative error of var + eps (from saved_invstd) over the channels.
  auto variance_error = [&](const test::BnKernelConfig& config) {
    test::ScopedBnKernelConfig scoped(config);
    Tensor x(ctx, shape), y(ctx, shape), gamma(ctx, {2}), beta(ctx, {2}), rmt(ctx, {2}), rvt(ctx, {2}), sm(ctx, {2}),
        si(ctx, {2});
    x.upload(xv);
    gamma.upload(ones);
    beta.upload(zeros);
    rmt.upload(zeros);
    rvt.upload(ones);
    Recording rec(ctx);
    batchnorm2d_forward_train(rec, x, gamma, beta, rmt, rvt, sm, si, y, 1e-5f, 0.1f, false);
    // Split: partial sums, their per-channel sum, then the normalization.
    CHECK(rec.dispatch_shapes().size() == (config.reduction == BnReduction::Split ? 3u : 1u));
    rec.run();
    const auto got = si.download();
    double worst = 0;
    for (int c = 0; c < 2; ++c) {
      const double want = 1.0 / (double(invstd_want[c]) * invstd_want[c]), have = 1.0 / (double(got[c]) * got[c]);
      worst = std::max(worst, std::fabs(have - want) / want);
    }
    return worst;
  };
  for (const char* walk : {"contiguous", "interleaved"}) {
    const std::string walk_name = walk;
    CAPTURE(walk_name);
    const double single = variance_error({walk, BnReduction::Single, 0});
    for (uint32_t chunk : {0u, 5u, 1000u}) {
      CAPTURE(chunk);
      const double split = variance_error({walk, BnReduction::Split, chunk});
      MESSAGE("relative error of the variance: one workgroup " << single << ", split " << split);
      // Not worse than one workgroup per channel beyond float noise (both ~1e-6 here).
      CHECK(split <= std::max(2 * single, 1e-5));
    }
  }
}

TEST_CASE("batchnorm2d training forward + residual (+ ReLU) == reference, and == BN then add" *
          doctest::test_suite("batchnorm2d")) {
  Context& ctx = test::ctx();
  for (const auto& config : test::kBnKernelConfigs)
  for (const auto& shape : kShapes)
    for (bool relu : {false, true}) {
      CAPTURE(shape_str(shape));
      CAPTURE(relu);
      CAPTURE(config.str());
      test::ScopedBnKernelConfig scoped(config);
      const int c = shape[1];
      auto xv = activations(shape, 30, 1.f, 2.f), rv_in = activations(shape, 31, 0.f, 1.5f);
      auto gv = test::random_vector(c, 32, 0.5f, 1.5f), bv = test::random_vector(c, 33);
      std::vector<float> ones(size_t(c), 1.f), zeros(size_t(c), 0.f);
      Tensor x(ctx, shape), res(ctx, shape), y(ctx, shape), bn_only(ctx, shape), gamma(ctx, {c}), beta(ctx, {c}),
          rm(ctx, {c}), rv(ctx, {c}), sm(ctx, {c}), si(ctx, {c}), rm2(ctx, {c}), rv2(ctx, {c}), sm2(ctx, {c}),
          si2(ctx, {c});
      x.upload(xv);
      res.upload(rv_in);
      gamma.upload(gv);
      beta.upload(bv);
      for (Tensor* t : {&rm, &rm2}) t->upload(zeros);
      for (Tensor* t : {&rv, &rv2}) t->upload(ones);
      Recording rec(ctx);
      batchnorm2d_forward_train(rec, x, gamma, beta, rm, rv, sm, si, y, 1e-5f, 0.1f, relu, nullptr, &res);
      batchnorm2d_forward_train(rec, x, gamma, beta, rm2, rv2, sm2, si2, bn_only, 1e-5f, 0.1f, false);
      rec.run();
      std::vector<float> rm_want = zeros, rv_want = ones, mean_want, invstd_want;
      const auto y_want = ref::batchnorm2d_forward_train(xv, shape, gv, bv, rm_want, rv_want, mean_want, invstd_want,
                                                         1e-5, 0.1, relu, &rv_in);
      check_bn(y.download(), y_want, "y");
      check_bn(rm.download(), rm_want, "running_mean");
      check_bn(sm.download(), mean_want, "saved_mean");
      // The same float operations as BN then add (then ReLU): bit for bit.
      const auto b = bn_only.download(), got = y.download();
      size_t same = 0;
      for (size_t i = 0; i < b.size(); ++i) {
        const float sum = b[i] + rv_in[i];
        same += got[i] == (relu && sum < 0.f ? 0.f : sum);
      }
      CHECK(same == b.size());
    }
  Tensor x(ctx, {2, 3, 4, 4}), wrong(ctx, {2, 3, 4, 5}), y(ctx, {2, 3, 4, 4}), t3(ctx, {3});
  Recording rec(ctx);
  CHECK_THROWS_AS(batchnorm2d_forward_train(rec, x, t3, t3, t3, t3, t3, t3, y, 1e-5f, 0.1f, false, nullptr, &wrong),
                  Error);
}

TEST_CASE("batchnorm2d eval forward matches the reference" * doctest::test_suite("batchnorm2d")) {
  Context& ctx = test::ctx();
  for (auto shape : kShapes)
    for (bool relu : {false, true}) {
      CAPTURE(shape_str(shape));
      int c = shape[1];
      auto xv = activations(shape, 30, 0.2f, 2.f);
      auto gv = test::random_vector(c, 31, 0.5f, 1.5f), bv = test::random_vector(c, 32);
      auto rmv = test::random_vector(c, 33), rvv = test::random_vector(c, 34, 0.5f, 2.f);
      Tensor x(ctx, shape), y(ctx, shape), gamma(ctx, {c}), beta(ctx, {c}), rm(ctx, {c}), rv(ctx, {c});
      x.upload(xv);
      gamma.upload(gv);
      beta.upload(bv);
      rm.upload(rmv);
      rv.upload(rvv);
      Recording rec(ctx);
      batchnorm2d_forward_eval(rec, x, gamma, beta, rm, rv, y, 1e-5f, relu);
      rec.run();
      check_bn(y.download(), ref::batchnorm2d_forward_eval(xv, shape, gv, bv, rmv, rvv, 1e-5, relu), "eval y");
    }
  // Batch large enough that one channel spans several workgroups.
  std::vector<int> shape{40, 2, 16, 16};
  auto xv = activations(shape, 35, 0.f, 1.f);
  std::vector<float> gv{1.5f, 0.5f}, bv{0.1f, -0.2f}, rmv{0.3f, -0.1f}, rvv{0.8f, 1.9f};
  Tensor x(ctx, shape), y(ctx, shape), gamma(ctx, {2}), beta(ctx, {2}), rm(ctx, {2}), rv(ctx, {2});
  x.upload(xv);
  gamma.upload(gv);
  beta.upload(bv);
  rm.upload(rmv);
  rv.upload(rvv);
  Recording rec(ctx);
  batchnorm2d_forward_eval(rec, x, gamma, beta, rm, rv, y, 1e-5f, false);
  rec.run();
  check_bn(y.download(), ref::batchnorm2d_forward_eval(xv, shape, gv, bv, rmv, rvv, 1e-5, false), "eval y, N=40");
}

TEST_CASE("batchnorm2d backward matches the reference" * doctest::test_suite("batchnorm2d")) {
  Context& ctx = test::ctx();
  // Backward also takes one value per channel (N*H*W = 1; training forward refuses it).
  std::vector<std::vector<int>> shapes = kShapes;
  shapes.push_back({1, 3, 1, 1});
  for (const auto& config : test::kBnKernelConfigs)
  for (const auto& shape : shapes)
    for (bool relu : {false, true})
      for (bool accumulate : {false, true}) {
        CAPTURE(shape_str(shape));
      CAPTURE(config.str());
      test::ScopedBnKernelConfig scoped(config);
        CAPTURE(relu);
        CAPTURE(accumulate);
        int c = shape[1];
        size_t n = numel(shape);
        auto xv = activations(shape, 40, 0.3f, 1.f), dyv = test::random_vector(n, 41);
        auto gv = test::random_vector(c, 42, 0.5f, 1.5f), bv = test::random_vector(c, 43);
        std::vector<float> rm(c, 0.f), rv(c, 1.f), mean, invstd, dx_want, dg_want, db_want;
        auto yv = ref::batchnorm2d_forward_train(xv, shape, gv, bv, rm, rv, mean, invstd, 1e-5, 0.1, relu);
        ref::batchnorm2d_backward(xv, yv, dyv, shape, gv, mean, invstd, relu, dx_want, dg_want, db_want);

        Tensor x(ctx, shape), y(ctx, shape), dy(ctx, shape), dx(ctx, shape), gamma(ctx, {c}),
            saved_mean(ctx, {c}), saved_invstd(ctx, {c}), dgamma(ctx, {c}), dbeta(ctx, {c});
        x.upload(xv);
        y.upload(yv);  // the reference's y, so the ReLU mask is identical
        dy.upload(dyv);
        gamma.upload(gv);
        saved_mean.upload(mean);
        saved_invstd.upload(invstd);
        auto dx0 = test::random_vector(n, 44), dg0 = test::random_vector(c, 45), db0 = test::random_vector(c, 46);
        dx.upload(dx0);
        dgamma.upload(dg0);
        dbeta.upload(db0);
        if (accumulate)
          for (size_t i = 0; i < n; ++i) dx_want[i] += dx0[i];
        Recording rec(ctx);
        // Accumulate dx only, or the parameter gradients only: both flags exercised.
        batchnorm2d_backward(rec, x, y, dy, gamma, saved_mean, saved_invstd, dx, accumulate, dgamma, dbeta,
                             !accumulate, relu);
        rec.run();
        if (!accumulate)
          for (int ch = 0; ch < c; ++ch) dg_want[ch] += dg0[ch], db_want[ch] += db0[ch];
        const auto dx_got = dx.download();
        check_bn(dx_got, dx_want, "dx");
        check_bn(dgamma.download(), dg_want, "dgamma");
        check_bn(dbeta.download(), db_want, "dbeta");
        if (!accumulate) {  // dx is overwritten: a replay gives the same bits (fixed orders)
          rec.run();
          CHECK(dx.download() == dx_got);
        }
      }
}

TEST_CASE("batchnorm2d backward with grad_out == relu_backward then backward, bit for bit" *
          doctest::test_suite("batchnorm2d")) {
  Context& ctx = test::ctx();
  for (const auto& config : test::kBnKernelConfigs)
  for (const auto& shape : kShapes) {
    CAPTURE(shape_str(shape));
    CAPTURE(config.str());
    test::ScopedBnKernelConfig scoped(config);
    const int c = shape[1];
    const size_t n = numel(shape);
    Tensor x(ctx, shape), y(ctx, shape), dy(ctx, shape), g(ctx, shape), g_ref(ctx, shape), dx(ctx, shape),
        dx_ref(ctx, shape);
    std::vector<Tensor> ch;  // gamma, saved_mean, saved_invstd, dgamma, dbeta, dgamma_ref, dbeta_ref
    for (int i = 0; i < 7; ++i) ch.emplace_back(ctx, std::vector<int>{c});
    x.upload(activations(shape, 50, 0.3f, 1.f));
    y.upload(test::random_vector(n, 51));  // any values: only the sign (the mask) is read
    dy.upload(test::random_vector(n, 52));
    ch[0].upload(test::random_vector(size_t(c), 53, 0.5f, 1.5f));
    ch[1].upload(test::random_vector(size_t(c), 54));
    ch[2].upload(test::random_vector(size_t(c), 55, 0.5f, 2.f));
    Recording rec(ctx);
    batchnorm2d_backward(rec, x, y, dy, ch[0], ch[1], ch[2], dx, false, ch[3], ch[4], false, true, nullptr, &g);
    relu_backward(rec, y, dy, g_ref, false);
    batchnorm2d_backward(rec, x, y, g_ref, ch[0], ch[1], ch[2], dx_ref, false, ch[5], ch[6], false);
    rec.run();
    CHECK(g.download() == g_ref.download());
    CHECK(dx.download() == dx_ref.download());
    CHECK(ch[3].download() == ch[5].download());
    CHECK(ch[4].download() == ch[6].download());
  }
  Tensor x(ctx, {2, 3, 4, 4}), wrong(ctx, {2, 3, 4, 5}), ch(ctx, {3});
  Recording rec(ctx);
  CHECK_THROWS_AS(batchnorm2d_backward(rec, x, x, x, ch, ch, ch, x, false, ch, ch, false, true, nullptr, &wrong), Error);
  CHECK_THROWS_AS(batchnorm2d_backward(rec, x, x, x, ch, ch, ch, x, false, ch, ch, false, false, nullptr, &x), Error);
}

TEST_CASE("batchnorm2d reference backward equals finite differences" * doctest::test_suite("batchnorm2d")) {
  const std::vector<int> shape{2, 3, 3, 2};
  size_t n = numel(shape);
  auto x = to_double(test::random_vector(n, 50, -1.f, 2.f));
  auto w = to_double(test::random_vector(n, 51));
  auto gamma = to_double(test::random_vector(3, 52, 0.5f, 1.5f)), beta = to_double(test::random_vector(3, 53));
  for (bool relu : {false, true}) {
    CAPTURE(relu);
    auto loss = [&](const std::vector<double>& xx, const std::vector<double>& g, const std::vector<double>& b) {
      std::vector<double> rm(3, 0.0), rv(3, 1.0), mean, invstd;
      auto y = ref::batchnorm2d_forward_train(xx, shape, g, b, rm, rv, mean, invstd, 1e-5, 0.1, relu);
      double s = 0;
      for (size_t i = 0; i < y.size(); ++i) s += y[i] * w[i];
      return s;
    };
    std::vector<double> rm(3, 0.0), rv(3, 1.0), mean, invstd, dx, dg, db;
    auto y = ref::batchnorm2d_forward_train(x, shape, gamma, beta, rm, rv, mean, invstd, 1e-5, 0.1, relu);
    ref::batchnorm2d_backward(x, y, w, shape, gamma, mean, invstd, relu, dx, dg, db);
    const double h = 1e-6;
    auto fd = [&](std::vector<double>* v, size_t i) {
      double orig = (*v)[i];
      (*v)[i] = orig + h;
      double lp = loss(x, gamma, beta);
      (*v)[i] = orig - h;
      double lm = loss(x, gamma, beta);
      (*v)[i] = orig;
      return (lp - lm) / (2 * h);
    };
    for (size_t i = 0; i < n; ++i) CHECK(dx[i] == doctest::Approx(fd(&x, i)).epsilon(1e-6));
    for (size_t ch = 0; ch < 3; ++ch) {
      CHECK(dg[ch] == doctest::Approx(fd(&gamma, ch)).epsilon(1e-6));
      CHECK(db[ch] == doctest::Approx(fd(&beta, ch)).epsilon(1e-6));
    }
  }
}

TEST_CASE("batchnorm2d rejects bad shapes" * doctest::test_suite("batchnorm2d")) {
  Context& ctx = test::ctx();
  Tensor x(ctx, {2, 3, 4, 4}), y(ctx, {2, 3, 4, 4}), c3(ctx, {3}), c3b(ctx, {3}), c3c(ctx, {3}),
      c3d(ctx, {3}), c3e(ctx, {3}), c3f(ctx, {3}), c4(ctx, {4}), flat(ctx, {2, 48}), y_bad(ctx, {2, 3, 4, 5});
  Recording rec(ctx);
  CHECK_THROWS_AS(batchnorm2d_forward_train(rec, flat, c3, c3b, c3c, c3d, c3e, c3f, flat), Error);
  CHECK_THROWS_AS(batchnorm2d_forward_train(rec, x, c4, c3b, c3c, c3d, c3e, c3f, y), Error);
  CHECK_THROWS_AS(batchnorm2d_forward_train(rec, x, c3, c3b, c3c, c3d, c3e, c3f, y_bad), Error);
  CHECK_THROWS_AS(batchnorm2d_forward_eval(rec, x, c3, c3b, c4, c3d, y), Error);
  CHECK_THROWS_AS(batchnorm2d_backward(rec, x, y, y_bad, c3, c3b, c3c, y, false, c3d, c3e, false), Error);
  CHECK_THROWS_AS(batchnorm2d_backward(rec, x, y, y, c3, c3b, c3c, y, false, c4, c3e, false), Error);
  // One value per channel: the batch variance is undefined (PyTorch raises too).
  Tensor single(ctx, {1, 3, 1, 1}), single_y(ctx, {1, 3, 1, 1});
  CHECK_THROWS_AS(batchnorm2d_forward_train(rec, single, c3, c3b, c3c, c3d, c3e, c3f, single_y), Error);
  batchnorm2d_forward_eval(rec, single, c3, c3b, c3c, c3d, single_y);  // fine in eval
}


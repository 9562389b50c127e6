// Synchronized batch norm (BnStatsSync, --sync-bn): one process of two simulated in one.
// The kernels run on the first half of a batch; the fake exchange plays the second process
// with that half's statistics from the double-precision reference. The result must be
// batch norm of the whole batch (the reference over all of it) on the first half: y,
// saved and running statistics (unbiased with the whole count), dx; dgamma/dbeta stay the
// first half's own sums. Chan's merge itself against a two-pass variance.
#include <algorithm>

#include "backend/error.h"
#include "nn/ops/batchnorm2d.h"
#include "testutil.h"

using namespace vkqat;
using namespace vkqat::nn;

namespace {
constexpr double kRtol = 1e-4, kAtolScale = 1e-5;  // test_batchnorm2d's tolerances

void check_bn(const std::vector<float>& got, const std::vector<float>& want, const std::string& what) {
  double m = 1e-3;
  for (float v : want) m = std::max(m, double(std::fabs(v)));
  test::check_close(got, want, kRtol, kAtolScale * m, what);
}

// The other process: its per-channel mean and biased variance (forward) and its gradient
// sums (backward), merged or added as the real exchange would with rank 0 = this process.
struct OtherHalf final : BnStatsSync {
  std::vector<float> mean, var, sums;  // sums: [sum g*xhat | sum g]
  int moment_calls = 0, sum_calls = 0;
  int processes() const override { return 2; }
  void merge_moments(float* m, float* v, int channels, double elements) override {
    std::vector<float> means(m, m + channels), vars(v, v + channels);
    means.insert(means.end(), mean.begin(), mean.end());
    vars.insert(vars.end(), var.begin(), var.end());
    merge_channel_moments(means.data(), vars.data(), 2, channels, elements, m, v);
    ++moment_calls;
  }
  void sum(float* values, size_t n) override {
    REQUIRE(n == sums.size());
    for (size_t i = 0; i < n; ++i) values[i] += sums[i];
    ++sum_calls;
  }
};

// Items [first, first + count) of an NCHW vector.
std::vector<float> items(const std::vector<float>& v, const std::vector<int>& shape, int first, int count) {
  const size_t item = size_t(shape[1]) * shape[2] * shape[3];
  return {v.begin() + long(item * first), v.begin() + long(item * (first + count))};
}
}  // namespace

TEST_CASE("merge_channel_moments equals the variance of the concatenated values" *
          doctest::test_suite("batchnorm2d")) {
  // Three ranks, 5 values per channel each, means far from zero (a naive E[x^2] - E[x]^2
  // would lose digits here).
  const int ranks = 3, channels = 2, n = 5;
  std::vector<float> means(ranks * channels), vars(ranks * channels);
  std::vector<std::vector<double>> all(channels);
  for (int r = 0; r < ranks; ++r)
    for (int c = 0; c < channels; ++c) {
      auto v = test::random_vector(n, uint32_t(10 * r + c), 100.f + r, 101.f + 2 * r);
      double s = 0, q = 0;
      for (float x : v) s += x, all[size_t(c)].push_back(x);
      for (float x : v) q += (x - s / n) * (x - s / n);
      means[size_t(r * channels + c)] = float(s / n), vars[size_t(r * channels + c)] = float(q / n);
    }
  std::vector<float> mean(channels), var(channels);
  merge_channel_moments(means.data(), vars.data(), ranks, channels, n, mean.data(), var.data());
  for (int c = 0; c < channels; ++c) {
    double s = 0, q = 0;
    for (double x : all[size_t(c)]) s += x;
    const double m = s / double(all[size_t(c)].size());
    for (double x : all[size_t(c)]) q += (x - m) * (x - m);
    CHECK(mean[size_t(c)] == doctest::Approx(m).epsilon(1e-6));
    CHECK(var[size_t(c)] == doctest::Approx(q / double(all[size_t(c)].size())).epsilon(1e-4));
  }
}

TEST_CASE("synchronized batchnorm2d on half a batch == batchnorm2d of the whole batch" *
          doctest::test_suite("batchnorm2d")) {
  Context& ctx = test::ctx();
  // Whole-batch shapes (N even: two equal halves); H*W % 4 == 0 takes the vec4 kernels.
  const std::vector<std::vector<int>> shapes = {{4, 3, 1, 1}, {2, 17, 5, 3}, {70, 3, 2, 2}, {8, 16, 14, 14}};
  for (const char* walk : {"contiguous", "interleaved"})
    for (const auto& whole : shapes)
      for (int variant = 0; variant < 3; ++variant) {  // 0 plain, 1 fused ReLU, 2 residual + ReLU
        CAPTURE(shape_str(whole));
        CAPTURE(walk);
        CAPTURE(variant);
        test::ScopedEnv env("VKQAT_BN_WALK", walk);
        const bool relu = variant > 0, residual = variant == 2;
        const int c = whole[1], half_n = whole[0] / 2;
        const std::vector<int> half{half_n, c, whole[2], whole[3]};
        const size_t n_whole = size_t(whole[0]) * c * whole[2] * whole[3], n_half = n_whole / 2;
        // The halves get different offsets: their means differ, so the merge's between-rank term matters.
        auto xv = test::random_vector(n_whole, 60, 2.f, 3.f);
        for (size_t i = n_half; i < n_whole; ++i) xv[i] -= 1.5f;
        auto resv = test::random_vector(n_whole, 61), dyv = test::random_vector(n_whole, 62);
        auto gv = test::random_vector(size_t(c), 63, 0.5f, 1.5f), bv = test::random_vector(size_t(c), 64);
        const auto rm0 = test::random_vector(size_t(c), 65), rv0 = test::random_vector(size_t(c), 66, 0.5f, 2.f);

        // The whole batch in the reference (double). With a residual, BN's output before the
        // ReLU is y - residual: the backward's ReLU mask is taken from y itself.
        std::vector<float> rm_want = rm0, rv_want = rv0, mean, invstd, dx_want, dg_unused, db_unused;
        auto y_want = ref::batchnorm2d_forward_train(xv, whole, gv, bv, rm_want, rv_want, mean, invstd, 1e-5, 0.1, relu,
                                                     residual ? &resv : nullptr);
        ref::batchnorm2d_backward(xv, y_want, dyv, whole, gv, mean, invstd, relu, dx_want, dg_unused, db_unused);

        // The second half's statistics and gradient sums, for the fake exchange.
        OtherHalf other;
        other.mean.assign(size_t(c), 0.f), other.var.assign(size_t(c), 0.f), other.sums.assign(2 * size_t(c), 0.f);
        std::vector<float> own_dg(static_cast<size_t>(c)), own_db(static_cast<size_t>(c));
        const size_t hw = size_t(whole[2]) * whole[3];
        for (int ch = 0; ch < c; ++ch) {
          for (int part = 0; part < 2; ++part) {
            double s = 0, q = 0, sg = 0, sgx = 0;
            for (int b = part * half_n; b < (part + 1) * half_n; ++b)
              for (size_t i = 0; i < hw; ++i) {
                const size_t k = (size_t(b) * c + size_t(ch)) * hw + i;
                s += xv[k];
                const double g = relu && !(y_want[k] > 0) ? 0.0 : dyv[k];
                sg += g, sgx += g * (xv[k] - mean[size_t(ch)]) * invstd[size_t(ch)];
              }
            const double m = s / double(half_n * hw);
            for (int b = part * half_n; b < (part + 1) * half_n; ++b)
              for (size_t i = 0; i < hw; ++i) q += std::pow(xv[(size_t(b) * c + size_t(ch)) * hw + i] - m, 2);
            if (part == 1) {
              other.mean[size_t(ch)] = float(m), other.var[size_t(ch)] = float(q / double(half_n * hw));
              other.sums[size_t(ch)] = float(sgx), other.sums[size_t(c + ch)] = float(sg);
            } else {
              own_dg[size_t(ch)] = float(sgx), own_db[size_t(ch)] = float(sg);
            }
          }
        }

        Tensor x(ctx, half), y(ctx, half), res(ctx, half), dy(ctx, half), dx(ctx, half), gamma(ctx, {c}),
            beta(ctx, {c}), rm(ctx, {c}), rv(ctx, {c}), sm(ctx, {c}), si(ctx, {c}), dgamma(ctx, {c}), dbeta(ctx, {c});
        x.upload(items(xv, whole, 0, half_n));
        res.upload(items(resv, whole, 0, half_n));
        dy.upload(items(dyv, whole, 0, half_n));
        gamma.upload(gv), beta.upload(bv), rm.upload(rm0), rv.upload(rv0);
        Recording rec(ctx);
        batchnorm2d_forward_train(rec, x, gamma, beta, rm, rv, sm, si, y, 1e-5f, 0.1f, relu, nullptr,
                                  residual ? &res : nullptr, &other);
        batchnorm2d_backward(rec, x, y, dy, gamma, sm, si, dx, false, dgamma, dbeta, false, relu, nullptr, nullptr,
                             &other);
        CHECK(rec.host_step_count() == 2);
        rec.run();
        CHECK(other.moment_calls == 1);
        CHECK(other.sum_calls == 1);
        check_bn(y.download(), items(y_want, whole, 0, half_n), "y");
        check_bn(sm.download(), mean, "saved_mean");
        check_bn(si.download(), invstd, "saved_invstd");
        check_bn(rm.download(), rm_want, "running_mean");
        check_bn(rv.download(), rv_want, "running_var (unbiased over the whole batch)");
        check_bn(dx.download(), items(dx_want, whole, 0, half_n), "dx");
        check_bn(dgamma.download(), own_dg, "dgamma (this half's own sum)");
        check_bn(dbeta.download(), own_db, "dbeta (this half's own sum)");
      }
}

TEST_CASE("synchronized batchnorm2d backward refuses accumulate_params" * doctest::test_suite("batchnorm2d")) {
  Context& ctx = test::ctx();
  Tensor x(ctx, {2, 3, 2, 2}), ch(ctx, {3});
  OtherHalf other;
  Recording rec(ctx);
  CHECK_THROWS_AS(batchnorm2d_backward(rec, x, x, x, ch, ch, ch, x, false, ch, ch, true, false, nullptr, nullptr, &other),
                  Error);
}

// LSQ (src/quant/lsq.h): weights (signed) and activations (unsigned), per tensor and per
// channel. Forward bit-exact against the CPU reference (outputs and level indices), inputs
// kept >= 1e-4 (in step units) from rounding ties and from the clamp ends. Backward: dv mask
// exact; ds (with gs) within 1e-5 relative (+ 1e-7 gs Qp sum|g| absolute) of a double
// reference; the reference equals finite differences of the STE surrogate; the step init
// within 1e-6 relative.
#include <algorithm>
#include <cmath>
#include <random>

#include "backend/error.h"
#include "quant/lsq.h"
#include "test_quant_common.h"

using namespace vkqat;
using namespace vkqat::quant;
using nn::Tensor;
namespace tq = vkqat::test::quant;

namespace {

struct Case {
  std::vector<int> shape;
  QuantTarget target;
};

std::vector<Case> cases() {
  std::vector<Case> c = {
      {{1}, QuantTarget::Weight},          {{5, 7}, QuantTarget::Weight},
      {{3, 5, 3, 3}, QuantTarget::Weight}, {{16, 16, 3, 3}, QuantTarget::Weight},
      {{1, 1, 1, 1}, QuantTarget::Activation}, {{2, 3, 5, 5}, QuantTarget::Activation},
      {{3, 4, 4, 4}, QuantTarget::Activation}, {{2, 5, 7, 3}, QuantTarget::Activation},
  };
  for (const auto& s : tq::random_shapes(2, 2, 4)) c.push_back({s, QuantTarget::Weight});
  for (const auto& s : tq::random_shapes(3, 2, 4)) c.push_back({s, QuantTarget::Activation});
  return c;
}

std::string describe(const Case& c, const LsqConfig& cfg) {
  return nn::shape_str(c.shape) + (c.target == QuantTarget::Weight ? " weight" : " activation") +
         (cfg.symmetric ? " signed" : "") + (cfg.per_channel ? " per-channel " : " per-tensor ") +
         std::to_string(cfg.bits) + " bit";
}

// Step sizes near the LSQ init of v, varied per channel.
std::vector<float> make_steps(const std::vector<float>& v, const std::vector<int>& shape, const LsqConfig& cfg,
                              uint32_t seed) {
  const auto init = ref::lsq_init_step(v, shape, cfg);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> jitter(0.6f, 1.4f);
  std::vector<float> s(init.size());
  for (size_t c = 0; c < s.size(); ++c) s[c] = float(init[c]) * jitter(rng);
  return s;
}

// Inputs away from ties and from the clamp ends -Qn, Qp (in step units).
std::vector<float> make_input(const std::vector<int>& shape, const LsqConfig& cfg, const std::vector<float>& s,
                              float lo, float hi, uint32_t seed) {
  const LsqRange range = lsq_range(cfg);
  return tq::keep_away_from_ties(
      test::random_vector(size_t(tq::numel(shape)), seed, lo, hi), lo, hi, seed + 1,
      [&](const std::vector<float>& v) { return ref::lsq_forward(v, shape, s, cfg).r; }, 1e-4, {-range.qn, range.qp});
}

std::vector<LsqConfig> configs(QuantTarget target) {
  std::vector<LsqConfig> out;
  for (int bits : tq::bit_widths())
    for (bool per_channel : {false, true})
      if (!(target == QuantTarget::Weight && bits == 1)) {
        out.push_back(LsqConfig{bits, target, per_channel});
        // The symmetric activation range (a linear bottleneck's quantizer, Qn = 2^(k-1)).
        if (target == QuantTarget::Activation && bits >= 2) out.push_back(LsqConfig{bits, target, per_channel, true});
      }
  return out;
}

// Data range: weights around +-1, activations mostly post-ReLU with a few negatives.
std::pair<float, float> data_range(QuantTarget target) {
  return target == QuantTarget::Weight ? std::make_pair(-1.f, 1.f) : std::make_pair(-0.2f, 3.f);
}

}  // namespace

TEST_CASE("lsq forward is bit-exact on the level grid" * doctest::test_suite("quant-lsq")) {
  Context& ctx = test::ctx();
  for (const Case& c : cases()) {
    for (const LsqConfig& cfg : configs(c.target)) {
      CAPTURE(describe(c, cfg));
      const auto [lo, hi] = data_range(c.target);
      const size_t n = size_t(tq::numel(c.shape));
      const auto first = test::random_vector(n, uint32_t(n + cfg.bits), lo, hi);
      const auto sv = make_steps(first, c.shape, cfg, uint32_t(n * 3 + cfg.bits));
      const auto vv = make_input(c.shape, cfg, sv, lo, hi, uint32_t(n * 5 + cfg.bits));
      Tensor v(ctx, c.shape), s(ctx, {int(sv.size())}), vq(ctx, c.shape);
      v.upload(vv);
      s.upload(sv);
      Recording rec(ctx);
      lsq_forward(rec, v, s, vq, cfg);
      rec.finish();
      rec.run();
      const auto got = vq.download();
      const auto want = ref::lsq_forward(vv, c.shape, sv, cfg);
      tq::check_exact(got, want.y, "lsq vq");
      const LsqRange range = lsq_range(cfg);
      const auto channel = channel_of_elements(c.shape, quant_scope(cfg.target, cfg.per_channel));
      std::vector<double> got_level(n), want_level(n);
      for (size_t i = 0; i < n; ++i) {
        got_level[i] = double(got[i]) / double(sv[size_t(channel[i])]);
        want_level[i] = round_half_away(std::min(std::max(want.r[i], -range.qn), range.qp));
      }
      tq::check_levels(got_level, want_level, "lsq levels");
    }
  }
}

TEST_CASE("lsq backward: dv mask exact, ds with its grad scale matches a double reference" *
          doctest::test_suite("quant-lsq")) {
  Context& ctx = test::ctx();
  auto backward_cases = cases();
  backward_cases.push_back({{128, 16, 28, 28}, QuantTarget::Activation});  // thousands of partials
  for (const Case& c : backward_cases) {
    for (const LsqConfig& cfg : configs(c.target)) {
      if (c.shape[0] == 128 && cfg.bits != 4) continue;
      CAPTURE(describe(c, cfg));
      const auto [lo, hi] = data_range(c.target);
      const size_t n = size_t(tq::numel(c.shape));
      const auto first = test::random_vector(n, uint32_t(n + cfg.bits), lo, hi);
      const auto sv = make_steps(first, c.shape, cfg, uint32_t(n * 3 + cfg.bits));
      const auto vv = make_input(c.shape, cfg, sv, lo, hi, uint32_t(n * 7 + cfg.bits));
      const auto gv = test::random_vector(n, uint32_t(n * 11 + cfg.bits), -0.5f, 1.f);
      const auto old = test::random_vector(n, 9);
      const std::vector<float> old_ds(sv.size(), 0.125f);
      Tensor v(ctx, c.shape), s(ctx, {int(sv.size())}), g(ctx, c.shape), dv(ctx, c.shape), dv_acc(ctx, c.shape);
      Tensor ds(ctx, {int(sv.size())}), ds_acc(ctx, {int(sv.size())});
      Tensor scratch = make_quant_scratch(ctx, c.shape, quant_scope(cfg.target, cfg.per_channel));
      v.upload(vv);
      s.upload(sv);
      g.upload(gv);
      dv_acc.upload(old);
      ds_acc.upload(old_ds);
      Recording rec(ctx);
      lsq_backward(rec, v, s, g, dv, false, ds, false, scratch, cfg);
      lsq_backward(rec, v, s, g, dv_acc, true, ds_acc, true, scratch, cfg);
      rec.finish();
      rec.run();
      const auto want = ref::lsq_backward(vv, c.shape, sv, gv, cfg);
      tq::check_exact(dv.download(), want.dv, "lsq dv");
      std::vector<float> want_acc(n);
      for (size_t i = 0; i < n; ++i) want_acc[i] = old[i] + want.dv[i];
      tq::check_exact(dv_acc.download(), want_acc, "lsq dv accumulated");

      const LsqRange range = lsq_range(cfg);
      const double gs = lsq_grad_scale(cfg, c.shape);
      const auto channel = channel_of_elements(c.shape, quant_scope(cfg.target, cfg.per_channel));
      std::vector<double> scale(sv.size(), 0.0);  // gs Qp sum|g| per channel: the absolute tolerance scale
      for (size_t i = 0; i < n; ++i) scale[size_t(channel[i])] += gs * std::max(range.qn, range.qp) * std::fabs(gv[i]);
      const auto got_ds = ds.download(), got_ds_acc = ds_acc.download();
      for (size_t k = 0; k < sv.size(); ++k) {
        CAPTURE(k);
        CHECK(std::fabs(got_ds[k] - want.ds[k]) <= 1e-5 * std::fabs(want.ds[k]) + 1e-7 * scale[k]);
        CHECK(std::fabs(got_ds_acc[k] - (0.125 + want.ds[k])) <= 1e-5 * std::fabs(want.ds[k]) + 1e-7 * scale[k] + 1e-7);
      }
    }
  }
}

TEST_CASE("lsq grad scale counts elements per step without the batch" * doctest::test_suite("quant-lsq")) {
  auto gs = [](int bits, QuantTarget t, bool pc, std::vector<int> shape) {
    return double(lsq_grad_scale(LsqConfig{bits, t, pc}, shape));
  };
  CHECK(gs(4, QuantTarget::Weight, false, {16, 16, 3, 3}) == doctest::Approx(1 / std::sqrt(2304.0 * 7)).epsilon(1e-7));
  CHECK(gs(4, QuantTarget::Weight, true, {16, 16, 3, 3}) == doctest::Approx(1 / std::sqrt(144.0 * 7)).epsilon(1e-7));
  CHECK(gs(4, QuantTarget::Activation, false, {128, 16, 28, 28}) ==
        doctest::Approx(1 / std::sqrt(12544.0 * 15)).epsilon(1e-7));
  CHECK(gs(2, QuantTarget::Activation, true, {128, 16, 28, 28}) == doctest::Approx(1 / std::sqrt(784.0 * 3)).epsilon(1e-7));
  CHECK(lsq_elements_per_step(LsqConfig{8, QuantTarget::Activation, false}, {7, 10}) == 10);
}

TEST_CASE("lsq reference ds is the derivative of the STE surrogate" * doctest::test_suite("quant-lsq")) {
  // Surrogate: vq(s) = s (clamp(v/s, -Qn, Qp) + c), c = the rounding residual at s0 held fixed.
  for (QuantTarget target : {QuantTarget::Weight, QuantTarget::Activation}) {
    const LsqConfig cfg{3, target, false};
    const LsqRange range = lsq_range(cfg);
    const std::vector<int> shape = {4, 20};
    const float s0 = 0.3f;
    const auto [lo, hi] = data_range(target);
    const auto vv = make_input(shape, cfg, {s0}, lo, hi, 77);
    const auto gv = test::random_vector(vv.size(), 78);
    std::vector<double> c(vv.size());
    for (size_t i = 0; i < vv.size(); ++i) {
      const double r = std::min(std::max(double(vv[i]) / s0, -double(range.qn)), double(range.qp));
      c[i] = std::round(r) - r;  // no ties by construction
    }
    auto loss = [&](double s) {
      double sum = 0;
      for (size_t i = 0; i < vv.size(); ++i) {
        const double r = std::min(std::max(double(vv[i]) / s, -double(range.qn)), double(range.qp));
        sum += double(gv[i]) * s * (r + c[i]);
      }
      return sum;
    };
    const double h = 1e-7, fd = (loss(s0 + h) - loss(s0 - h)) / (2 * h);
    const auto want = ref::lsq_backward(vv, shape, {s0}, gv, cfg);
    CHECK(want.ds[0] == doctest::Approx(fd * lsq_grad_scale(cfg, shape)).epsilon(1e-5));
  }
}

TEST_CASE("lsq step init: 2 mean|v| / sqrt(Qp) on the device, dead channels floored" *
          doctest::test_suite("quant-lsq")) {
  Context& ctx = test::ctx();
  for (const Case& c : cases()) {
    for (const LsqConfig& cfg : configs(c.target)) {
      CAPTURE(describe(c, cfg));
      const size_t n = size_t(tq::numel(c.shape));
      auto vv = test::random_vector(n, uint32_t(n + 17), -1.f, 2.f);
      const auto channel = channel_of_elements(c.shape, quant_scope(cfg.target, cfg.per_channel));
      if (cfg.per_channel && lsq_step_count(cfg, c.shape) > 1)
        for (size_t i = 0; i < n; ++i)
          if (channel[i] == 1) vv[i] = 0.f;  // a dead channel
      Tensor v(ctx, c.shape), s(ctx, {int(lsq_step_count(cfg, c.shape))});
      Tensor scratch = make_quant_scratch(ctx, c.shape, quant_scope(cfg.target, cfg.per_channel));
      v.upload(vv);
      Recording rec(ctx);
      lsq_init_step(rec, v, s, scratch, cfg);
      rec.finish();
      rec.run();
      const auto want = ref::lsq_init_step(vv, c.shape, cfg);
      const auto got = s.download();
      for (size_t k = 0; k < got.size(); ++k) {
        CAPTURE(k);
        CHECK(got[k] == doctest::Approx(want[k]).epsilon(1e-6));
        CHECK(got[k] >= kMinScale);
      }
    }
  }
}

TEST_CASE("lsq rejects bad bit-widths and shapes" * doctest::test_suite("quant-lsq")) {
  Context& ctx = test::ctx();
  const LsqConfig w4{4, QuantTarget::Weight, true}, a4{4, QuantTarget::Activation, false};
  Tensor v(ctx, {3, 2, 2, 2}), vq(ctx, {3, 2, 2, 2}), other(ctx, {2, 3, 2, 2}), s3(ctx, {3}), s1(ctx, {1});
  Tensor scratch = make_quant_scratch(ctx, {3, 2, 2, 2}, ReduceScope::Rows), small(ctx, {1});
  Recording rec(ctx);
  for (int bits : {0, kMaxKernelBits + 1}) {
    CHECK_THROWS_AS(lsq_forward(rec, v, s3, vq, LsqConfig{bits, QuantTarget::Weight, true}), Error);
    CHECK_THROWS_AS(lsq_forward(rec, v, s1, vq, LsqConfig{bits, QuantTarget::Activation, false}), Error);
  }
  CHECK_THROWS_AS(lsq_range(LsqConfig{1, QuantTarget::Weight, false}), Error);  // Qp = 0
  CHECK_NOTHROW(lsq_range(LsqConfig{1, QuantTarget::Activation, false}));
  CHECK_THROWS_AS(lsq_range(LsqConfig{1, QuantTarget::Activation, false, true}), Error);  // signed: Qp = 0
  CHECK(lsq_range(LsqConfig{4, QuantTarget::Activation, false, true}).qn == 8.f);
  CHECK(lsq_range(LsqConfig{4, QuantTarget::Activation, false, true}).qp == 7.f);
  CHECK_THROWS_AS(lsq_forward(rec, v, s1, vq, w4), Error);  // per-channel needs 3 steps
  CHECK_THROWS_AS(lsq_forward(rec, v, s3, vq, a4), Error);  // per-tensor needs 1
  CHECK_THROWS_AS(lsq_forward(rec, v, s3, other, w4), Error);
  CHECK_THROWS_AS(lsq_backward(rec, v, s3, other, vq, false, s3, false, scratch, w4), Error);
  CHECK_THROWS_AS(lsq_backward(rec, v, s3, vq, vq, false, s1, false, scratch, w4), Error);
  CHECK_THROWS_AS(lsq_backward(rec, v, s3, vq, vq, false, s3, false, small, w4), Error);
  CHECK_THROWS_AS(lsq_init_step(rec, v, s1, scratch, w4), Error);
  Tensor flat(ctx, {5}), s_flat(ctx, {1});
  CHECK_THROWS_AS(lsq_forward(rec, flat, s_flat, flat, LsqConfig{4, QuantTarget::Activation, false}), Error);
}

// Min-max uniform quantizers (src/quant/minmax.h): symmetric weights, asymmetric activations
// with a running range. Forwards bit-exact against the CPU reference (outputs and level
// indices), inputs kept >= 1e-4 (in step units) from rounding ties; STE masks exact; the
// running-range update (first observation copied, then EMA 0.01) exact.
#include <algorithm>
#include <cmath>
#include <limits>

#include "backend/error.h"
#include "quant/minmax.h"
#include "test_quant_common.h"

using namespace vkqat;
using namespace vkqat::quant;
using nn::Tensor;
namespace tq = vkqat::test::quant;

namespace {

const std::vector<std::vector<int>> kWeightShapes = {{1}, {5, 7}, {3, 5, 3, 3}, {16, 16, 3, 3}};
const std::vector<std::vector<int>> kActShapes = {{1, 1, 1, 1}, {2, 3, 5, 5}, {3, 4, 4, 4}, {2, 5, 7, 3}};

// A running range [2 * C] with per-channel variety: some ranges straddle 0, some are all
// positive (then lo = 0), one all negative.
std::vector<float> make_range(int64_t channels, uint32_t seed) {
  auto a = test::random_vector(size_t(channels), seed, -1.5f, 0.5f);
  auto b = test::random_vector(size_t(channels), seed + 1, 0.5f, 3.f);
  std::vector<float> range(size_t(2 * channels));
  for (int64_t c = 0; c < channels; ++c) range[size_t(c)] = a[size_t(c)], range[size_t(channels + c)] = b[size_t(c)];
  if (channels > 2) range[2] = -2.f, range[size_t(channels + 2)] = -0.5f;
  return range;
}

}  // namespace

TEST_CASE("minmax weights: symmetric forward bit-exact, STE backward" * doctest::test_suite("quant-minmax")) {
  Context& ctx = test::ctx();
  for (const auto& shape : kWeightShapes) {
    for (int bits : {2, 3, 4, 8}) {
      for (bool per_channel : {false, true}) {
        CAPTURE(nn::shape_str(shape));
        CAPTURE(bits);
        CAPTURE(per_channel);
        const MinMaxConfig cfg{bits, per_channel};
        const size_t n = size_t(tq::numel(shape));
        const auto wv = tq::keep_away_from_ties(
            test::random_vector(n, uint32_t(n + bits), -0.7f, 0.9f), -0.7f, 0.9f, 3, [&](const std::vector<float>& v) {
              return ref::minmax_weight_forward(v, shape, ref::minmax_weight_stat(v, shape, cfg), cfg).r;
            });
        const auto gv = test::random_vector(n, 4), old = test::random_vector(n, 5);
        const int channels = int(minmax_channel_count(QuantTarget::Weight, cfg, shape));
        Tensor w(ctx, shape), wq(ctx, shape), stat(ctx, {channels}), g(ctx, shape), dw(ctx, shape), dw_acc(ctx, shape);
        Tensor scratch = make_quant_scratch(ctx, shape, quant_scope(QuantTarget::Weight, per_channel));
        w.upload(wv);
        g.upload(gv);
        dw_acc.upload(old);
        Recording rec(ctx);
        minmax_weight_forward(rec, w, wq, stat, scratch, cfg);
        minmax_weight_backward(rec, g, dw, false);
        minmax_weight_backward(rec, g, dw_acc, true);
        rec.finish();
        rec.run();
        const auto want_stat = ref::minmax_weight_stat(wv, shape, cfg);
        tq::check_exact(stat.download(), want_stat, "max|w|");
        const auto got = wq.download();
        const auto want = ref::minmax_weight_forward(wv, shape, want_stat, cfg);
        tq::check_exact(got, want.y, "minmax wq");
        const float qp = float((1 << (bits - 1)) - 1);
        const auto channel = channel_of_elements(shape, quant_scope(QuantTarget::Weight, per_channel));
        std::vector<double> got_level(n), want_level(n);
        for (size_t i = 0; i < n; ++i) {
          const float s = std::max(want_stat[size_t(channel[i])], kMinScale) * (1.f / qp);
          got_level[i] = double(got[i]) / double(s);
          want_level[i] = round_half_away(std::min(std::max(want.r[i], -qp), qp));
        }
        tq::check_levels(got_level, want_level, "minmax weight levels");
        tq::check_exact(dw.download(), gv, "minmax dw");
        std::vector<float> want_acc(n);
        for (size_t i = 0; i < n; ++i) want_acc[i] = old[i] + gv[i];
        tq::check_exact(dw_acc.download(), want_acc, "minmax dw accumulated");
      }
    }
  }
}

TEST_CASE("minmax activations: asymmetric eval forward bit-exact, STE mask exact" * doctest::test_suite("quant-minmax")) {
  Context& ctx = test::ctx();
  for (const auto& shape : kActShapes) {
    for (int bits : tq::bit_widths()) {
      for (bool per_channel : {false, true}) {
        CAPTURE(nn::shape_str(shape));
        CAPTURE(bits);
        CAPTURE(per_channel);
        const MinMaxConfig cfg{bits, per_channel};
        const size_t n = size_t(tq::numel(shape));
        const int64_t channels = minmax_channel_count(QuantTarget::Activation, cfg, shape);
        const auto rv = make_range(channels, uint32_t(n + bits));
        const auto xv = tq::keep_away_from_ties(
            test::random_vector(n, uint32_t(n * 3 + bits), -2.5f, 3.5f), -2.5f, 3.5f, 6,
            [&](const std::vector<float>& v) { return ref::minmax_act_forward(v, shape, rv, cfg).r; });
        const auto gv = test::random_vector(n, 7), old = test::random_vector(n, 8);
        Tensor x(ctx, shape), y(ctx, shape), range(ctx, {2, int(channels)}), g(ctx, shape), dx(ctx, shape),
            dx_acc(ctx, shape);
        Tensor scratch = make_quant_scratch(ctx, shape, quant_scope(QuantTarget::Activation, per_channel));
        x.upload(xv);
        range.upload(rv);
        g.upload(gv);
        dx_acc.upload(old);
        Recording rec(ctx);
        minmax_act_forward(rec, x, y, range, scratch, cfg, false);
        minmax_act_backward(rec, x, range, g, dx, false, cfg);
        minmax_act_backward(rec, x, range, g, dx_acc, true, cfg);
        rec.finish();
        rec.run();
        tq::check_exact(range.download(), rv, "eval leaves the range alone");
        const auto got = y.download();
        const auto want = ref::minmax_act_forward(xv, shape, rv, cfg);
        tq::check_exact(got, want.y, "minmax y");
        // Levels: y / s + zp must be the clamped integer level of the reference.
        const float nl = levels(bits).n;
        const auto channel = channel_of_elements(shape, quant_scope(QuantTarget::Activation, per_channel));
        std::vector<double> got_level(n), want_level(n);
        for (size_t i = 0; i < n; ++i) {
          const size_t c = size_t(channel[i]);
          const float lo = std::min(rv[c], 0.f), hi = std::max(rv[size_t(channels) + c], 0.f);
          const float s = std::max((hi - lo) * levels(bits).inv_n, kMinScale);
          const float zp = std::min(std::max(round_half_away(-lo * (1.f / s)), 0.f), nl);
          got_level[i] = double(got[i]) / double(s) + zp;
          want_level[i] = std::min(std::max(round_half_away(want.r[i]) + zp, 0.f), nl);
        }
        tq::check_levels(got_level, want_level, "minmax activation levels");
        const auto want_dx = ref::minmax_act_backward(xv, shape, rv, gv, cfg);
        tq::check_exact(dx.download(), want_dx, "minmax dx");
        std::vector<float> want_acc(n);
        for (size_t i = 0; i < n; ++i) want_acc[i] = old[i] + want_dx[i];
        tq::check_exact(dx_acc.download(), want_acc, "minmax dx accumulated");
      }
    }
  }
}

TEST_CASE("minmax running range: first batch copied, then EMA 0.01; training forward uses it" *
          doctest::test_suite("quant-minmax")) {
  Context& ctx = test::ctx();
  for (const auto& shape : {std::vector<int>{4, 3, 5, 5}, std::vector<int>{8, 16, 4, 4}, std::vector<int>{1, 1, 1, 1}}) {
    for (bool per_channel : {false, true}) {
      CAPTURE(nn::shape_str(shape));
      CAPTURE(per_channel);
      const MinMaxConfig cfg{4, per_channel};
      const size_t n = size_t(tq::numel(shape));
      const int64_t channels = minmax_channel_count(QuantTarget::Activation, cfg, shape);
      Tensor x(ctx, shape), y(ctx, shape);
      Tensor range = make_minmax_range(ctx, channels);
      Tensor scratch = make_quant_scratch(ctx, shape, quant_scope(QuantTarget::Activation, per_channel));
      Recording rec(ctx);
      minmax_act_forward(rec, x, y, range, scratch, cfg, true);
      rec.finish();
      std::vector<float> want_range = range.download();
      CHECK(want_range[0] == std::numeric_limits<float>::infinity());
      CHECK(want_range[size_t(channels)] == -std::numeric_limits<float>::infinity());
      for (int step = 0; step < 3; ++step) {
        CAPTURE(step);
        const auto xv = test::random_vector(n, uint32_t(50 + step), -1.f - float(step), 2.f + 0.5f * float(step));
        x.upload(xv);
        rec.run();
        const std::vector<float> before = want_range;
        ref::minmax_observe(xv, shape, want_range, cfg);
        tq::check_exact(range.download(), want_range, "running range");
        if (!per_channel) {  // the reference itself, against the definition
          const double bmin = *std::min_element(xv.begin(), xv.end()), bmax = *std::max_element(xv.begin(), xv.end());
          const double want_min = step == 0 ? bmin : before[0] + 0.01 * (bmin - before[0]);
          const double want_max = step == 0 ? bmax : before[1] + 0.01 * (bmax - before[1]);
          CHECK(want_range[0] == doctest::Approx(want_min).epsilon(1e-6));
          CHECK(want_range[1] == doctest::Approx(want_max).epsilon(1e-6));
        }
        // Bit-exact output where the reference is not within 1e-4 of a tie (data replayed as-is).
        const auto want = ref::minmax_act_forward(xv, shape, want_range, cfg);
        const auto got = y.download();
        size_t bad = 0;
        for (size_t i = 0; i < n; ++i) bad += tq::tie_distance(want.r[i]) >= 1e-4 && got[i] != want.y[i];
        CHECK(bad == 0);
      }
    }
  }
}

TEST_CASE("minmax rejects bad bit-widths and shapes" * doctest::test_suite("quant-minmax")) {
  Context& ctx = test::ctx();
  Tensor w(ctx, {3, 2, 2, 2}), wq(ctx, {3, 2, 2, 2}), other(ctx, {2, 3, 2, 2}), stat1(ctx, {1}), stat3(ctx, {3});
  Tensor scratch = make_quant_scratch(ctx, {3, 2, 2, 2}, ReduceScope::Rows), small(ctx, {1});
  Tensor range1 = make_minmax_range(ctx, 1), range2 = make_minmax_range(ctx, 2);
  Recording rec(ctx);
  for (int bits : {0, 1, kMaxKernelBits + 1}) CHECK_THROWS_AS(minmax_weight_forward(rec, w, wq, stat1, scratch, MinMaxConfig{bits, false}), Error);
  for (int bits : {0, kMaxKernelBits + 1}) CHECK_THROWS_AS(minmax_act_forward(rec, w, wq, range1, scratch, MinMaxConfig{bits, false}, true), Error);
  CHECK_THROWS_AS(minmax_weight_forward(rec, w, wq, stat1, scratch, MinMaxConfig{4, true}), Error);  // needs 3
  CHECK_THROWS_AS(minmax_weight_forward(rec, w, other, stat3, scratch, MinMaxConfig{4, true}), Error);
  CHECK_THROWS_AS(minmax_weight_forward(rec, w, wq, stat3, small, MinMaxConfig{4, true}), Error);
  CHECK_THROWS_AS(minmax_weight_backward(rec, w, other, false), Error);
  CHECK_THROWS_AS(minmax_act_forward(rec, w, wq, range1, scratch, MinMaxConfig{4, true}, false), Error);  // needs [2, 2]
  CHECK_THROWS_AS(minmax_act_forward(rec, w, other, range2, scratch, MinMaxConfig{4, true}, false), Error);
  CHECK_THROWS_AS(minmax_observe(rec, w, range2, small, MinMaxConfig{4, true}), Error);
  CHECK_THROWS_AS(minmax_act_backward(rec, w, range1, other, wq, false, MinMaxConfig{4, false}), Error);
}

// conv2d: both kernel variants against the CPU reference, the reference backward against
// finite differences, accumulate, and shape errors.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "backend/error.h"
#include "nn/ops/conv2d.h"
#include "testutil.h"

using vkqat::Error;
using vkqat::Recording;
using vkqat::nn::Conv2dShape;
using vkqat::nn::ConvVariant;
using vkqat::nn::Tensor;
namespace nn = vkqat::nn;
namespace ref = vkqat::nn::ref;

namespace {

// Tolerance: |got - want| <= 1e-4 * |want| + 1e-5 * sqrt(K), K = terms summed per output
// (inputs are uniform in [-1, 1], so sums of K products are O(sqrt(K))).
constexpr double kRtol = 1e-4;
double atol_for(double terms) { return 1e-5 * std::sqrt(terms); }

struct Case {
  const char* what;
  Conv2dShape s;
};

// Awkward shapes: batch 1, 1x1 images, odd sizes with stride 2, channel counts that are not
// multiples of the block sizes, kernels other than 3x3, depthwise, and ResNet-like shapes
// that take the register-blocked fast paths (16-channel blocks, vec4 weight steps,
// neighbour exchange on aligned rows, 7-column blocks). Kept small: most of the runtime is
// compiling the pipelines.
const std::vector<Case>& cases() {
  static const std::vector<Case> all = {
      {"1x1 image, 3x3 pad 1", {2, 3, 1, 1, 5, 3, 3, 1, 1}},
      {"1x1 kernel stride 2 on 7x7", {2, 8, 7, 7, 16, 1, 1, 2, 0}},
      {"c_in 3 c_out 5", {2, 3, 9, 9, 5, 3, 3, 1, 1}},
      {"stride 2 pad 1 on 9x9", {2, 4, 9, 9, 6, 3, 3, 2, 1}},
      {"5x5 kernel pad 2", {2, 4, 8, 8, 4, 5, 5, 1, 2}},
      {"3x3 no padding, 4x10", {1, 4, 4, 10, 4, 3, 3, 1, 0}},
      {"3x3 pad 2 (output wider than input)", {1, 4, 8, 8, 4, 3, 3, 1, 2}},
      {"depthwise 3x3", {2, 6, 7, 7, 6, 3, 3, 1, 1, 6}},
      {"depthwise 3x3 stride 2", {1, 5, 8, 8, 5, 3, 3, 2, 1, 5}},
      {"ResNet 16->32 stride 2", {2, 16, 12, 12, 32, 3, 3, 2, 1}},
      {"batch 1, ResNet 16 28x28 (aligned rows)", {1, 16, 28, 28, 16, 3, 3, 1, 1}},
      {"14x14 (unaligned rows, 7-column blocks)", {2, 8, 14, 14, 8, 3, 3, 1, 1}},
  };
  return all;
}

// 1x1 unpadded convolutions, which the register-blocked variant runs through the conv2d_1x1_*
// kernels: unaligned planes (7x7, 5x6), channel counts that are not multiples of 4 or of
// the 16-channel / 8-pixel blocks, 1x1 images, batch 1, strides 2 and 3 on odd sizes
// (row blocks, scattered backward-data), and the aligned vec4 paths (28x28, 14x14, 8x8).
const std::vector<Case>& cases_1x1() {
  static const std::vector<Case> all = {
      {"1x1: c_in 3 c_out 5 on 7x7", {2, 3, 7, 7, 5, 1, 1, 1, 0}},
      {"1x1: c_in 6 c_out 9 on 5x6", {2, 6, 5, 6, 9, 1, 1, 1, 0}},
      {"1x1: 1x1 image, batch 1", {1, 4, 1, 1, 6, 1, 1, 1, 0}},
      {"1x1: 1x1 image, stride 2", {2, 5, 1, 1, 3, 1, 1, 2, 0}},
      {"1x1: stride 2 on 7x7", {2, 5, 7, 7, 3, 1, 1, 2, 0}},
      {"1x1: stride 2 on 9x10, 8->12", {2, 8, 9, 10, 12, 1, 1, 2, 0}},
      {"1x1: stride 2 on 8x8 (aligned rows)", {2, 4, 8, 8, 8, 1, 1, 2, 0}},
      {"1x1: stride 3 on 10x10", {1, 4, 10, 10, 4, 1, 1, 3, 0}},
      {"1x1: stride 2 16->32 on 28x28, batch 1", {1, 16, 28, 28, 32, 1, 1, 2, 0}},
      {"1x1: batch 1, 16->16 28x28 (aligned)", {1, 16, 28, 28, 16, 1, 1, 1, 0}},
      {"1x1: 32->20 on 14x14", {2, 32, 14, 14, 20, 1, 1, 1, 0}},
      {"1x1: 64->64 on 7x7", {3, 64, 7, 7, 64, 1, 1, 1, 0}},
      // Small batches: backward-weight cuts the planes into segments (2, uneven last).
      {"1x1: 16->16 on 6x6, batch 5 (plane segments)", {5, 16, 6, 6, 16, 1, 1, 1, 0}},
      {"1x1: 5->7 stride 2 on 9x9, batch 7 (plane segments)", {7, 5, 9, 9, 7, 1, 1, 2, 0}},
      // Few channel blocks and enough chunks: backward-weight splits K over 2 workgroups.
      {"1x1: 16->16 on 16x16, batch 8 (split K, segments)", {8, 16, 16, 16, 16, 1, 1, 1, 0}},
      {"1x1: 16->32 stride 2 on 30x30, batch 10 (split K)", {10, 16, 30, 30, 32, 1, 1, 2, 0}},
  };
  return all;
}

std::vector<float> random_for(const std::vector<int>& shape, uint32_t seed) {
  size_t n = 1;
  for (int d : shape) n *= size_t(d);
  return vkqat::test::random_vector(n, seed);
}

Tensor upload(vkqat::Context& ctx, const std::vector<int>& shape, const std::vector<float>& data) {
  Tensor t(ctx, shape);
  t.upload(data);
  return t;
}

std::vector<float> plus(std::vector<float> a, const std::vector<float>& b) {
  for (size_t i = 0; i < a.size(); ++i) a[i] += b[i];
  return a;
}

// Runs forward, backward-data and backward-weight on the device (each once overwriting and
// once accumulating into a random gradient) and compares with the reference.
void check_against_reference(const Case& c, uint32_t seed, vkqat::Context& ctx = vkqat::test::ctx()) {
  const Conv2dShape& s = c.s;
  const auto xv = random_for(s.x_shape(), seed), wv = random_for(s.w_shape(), seed + 1),
             gv = random_for(s.y_shape(), seed + 2), dx0 = random_for(s.x_shape(), seed + 3),
             dw0 = random_for(s.w_shape(), seed + 4);
  Tensor x = upload(ctx, s.x_shape(), xv), w = upload(ctx, s.w_shape(), wv), dy = upload(ctx, s.y_shape(), gv);
  Tensor y(ctx, s.y_shape()), dx(ctx, s.x_shape()), dw(ctx, s.w_shape());
  Tensor dx_acc = upload(ctx, s.x_shape(), dx0), dw_acc = upload(ctx, s.w_shape(), dw0);
  {
    Recording rec(ctx);
    nn::conv2d_forward(rec, s, x, w, y);
    nn::conv2d_backward_data(rec, s, dy, w, dx, false);
    nn::conv2d_backward_weight(rec, s, x, dy, dw, false);
    nn::conv2d_backward_data(rec, s, dy, w, dx_acc, true);
    nn::conv2d_backward_weight(rec, s, x, dy, dw_acc, true);
    rec.finish();
    rec.run();
  }
  const int cin_g = s.c_in / s.groups, cout_g = s.c_out / s.groups;
  const double k_fwd = double(cin_g) * s.kh * s.kw;
  const double k_data = double(cout_g) * s.kh * s.kw;
  const double k_weight = double(s.n) * s.out_h() * s.out_w();
  const std::string tag = std::string(c.what) + " (" + s.str() + ")";
  const auto want_y = ref::conv2d_forward(s, xv, wv);
  const auto want_dx = ref::conv2d_backward_data(s, gv, wv);
  const auto want_dw = ref::conv2d_backward_weight(s, xv, gv);
  vkqat::test::check_close(y.download(), want_y, kRtol, atol_for(k_fwd), "forward " + tag);
  vkqat::test::check_close(dx.download(), want_dx, kRtol, atol_for(k_data), "backward-data " + tag);
  vkqat::test::check_close(dw.download(), want_dw, kRtol, atol_for(k_weight), "backward-weight " + tag);
  vkqat::test::check_close(dx_acc.download(), plus(dx0, want_dx), kRtol, atol_for(k_data + 1),
                           "backward-data accumulate " + tag);
  vkqat::test::check_close(dw_acc.download(), plus(dw0, want_dw), kRtol, atol_for(k_weight + 1),
                           "backward-weight accumulate " + tag);
}

void check_variant(ConvVariant v, const std::vector<Case>& list) {
  nn::set_conv_variant(v);
  uint32_t seed = 100;
  for (const Case& c : list) {
    INFO(nn::conv_variant_name(v) << ": " << c.what);
    check_against_reference(c, seed += 10);
  }
  nn::set_conv_variant(ConvVariant::Auto);
}

// Central differences of loss = sum(conv(x, w) * g) in double. The convolution is linear in
// x and in w, so a large step is exact up to rounding.
void check_reference_gradients(const Conv2dShape& s) {
  const auto xv = random_for(s.x_shape(), 7), wv = random_for(s.w_shape(), 8), gv = random_for(s.y_shape(), 9);
  auto loss = [&](const std::vector<float>& x, const std::vector<float>& w) {
    const auto y = ref::conv2d_forward(s, x, w);
    double l = 0;
    for (size_t i = 0; i < y.size(); ++i) l += double(y[i]) * gv[i];
    return l;
  };
  const auto dx = ref::conv2d_backward_data(s, gv, wv);
  const auto dw = ref::conv2d_backward_weight(s, xv, gv);
  const double eps = 0.25;
  for (size_t i = 0; i < xv.size(); ++i) {
    const double num = vkqat::test::numeric_grad([&](const std::vector<float>& x) { return loss(x, wv); }, xv, i, eps);
    CHECK_MESSAGE(std::fabs(num - dx[i]) <= 1e-4 + 1e-4 * std::fabs(num), s.str() << " dx[" << i << "] " << dx[i] << " vs " << num);
  }
  for (size_t i = 0; i < wv.size(); ++i) {
    const double num = vkqat::test::numeric_grad([&](const std::vector<float>& w) { return loss(xv, w); }, wv, i, eps);
    CHECK_MESSAGE(std::fabs(num - dw[i]) <= 1e-4 + 1e-4 * std::fabs(num), s.str() << " dw[" << i << "] " << dw[i] << " vs " << num);
  }
}

template <class F>
void check_throws_error(F f, const std::string& what) {
  bool threw = false;
  try {
    f();
  } catch (const Error&) {
    threw = true;
  }
  CHECK_MESSAGE(threw, what << " did not throw vkqat::Error");
}

}  // namespace

TEST_CASE("conv2d reference backward equals finite differences" * doctest::test_suite("conv2d")) {
  check_reference_gradients({1, 2, 5, 5, 3, 3, 3, 2, 1});
  check_reference_gradients({2, 3, 4, 3, 2, 1, 1, 1, 0});
  check_reference_gradients({1, 3, 5, 4, 3, 3, 3, 1, 1, 3});
  check_reference_gradients({2, 2, 5, 5, 2, 3, 3, 2, 0, 2});  // depthwise, stride 2, no padding
}

TEST_CASE("conv2d register-blocked variant matches the reference" * doctest::test_suite("conv2d")) {
  check_variant(ConvVariant::RegisterBlocked, cases());
}

TEST_CASE("conv2d 1x1 kernels match the reference" * doctest::test_suite("conv2d")) {
  check_variant(ConvVariant::RegisterBlocked, cases_1x1());
}

TEST_CASE("conv2d generic register-blocked kernels on 1x1 shapes match the reference" *
          doctest::test_suite("conv2d")) {
  check_variant(ConvVariant::RegisterBlockedGeneric, cases_1x1());
}

TEST_CASE("conv2d tiled variant matches the reference" * doctest::test_suite("conv2d")) {
  check_variant(ConvVariant::Tiled, cases());
}

// GEMMs bigger than one tile in every direction (M = c_out >= 80 forward and backward-weight,
// M = c_in > 64 backward-data), so that the tiled kernels' edge tiles and inner tiles both
// run, with 64x64 tiles (256 invocations) and 32x32 tiles (a device allowing only 128, the
// mobile profile).
const std::vector<Case>& cases_large_gemm() {
  static const std::vector<Case> all = {
      {"3x3 72->96 on 8x8, batch 4", {4, 72, 8, 8, 96, 3, 3, 1, 1}},
      {"3x3 stride 2 40->84 on 9x9, batch 3", {3, 40, 9, 9, 84, 3, 3, 2, 1}},
      {"1x1 80->100 on 6x6, batch 2", {2, 80, 6, 6, 100, 1, 1, 1, 0}},
  };
  return all;
}

TEST_CASE("conv2d tiled variant on multi-tile GEMMs, both tile widths, matches the reference" *
          doctest::test_suite("conv2d")) {
  nn::set_conv_variant(ConvVariant::Tiled);
  uint32_t seed = 500;
  for (const Case& c : cases_large_gemm()) {
    INFO("tiled (device limits): " << c.what);
    check_against_reference(c, seed += 10);
  }
  if (vkqat::test::ctx().info().max_workgroup_invocations >= 256) {
    // 32x32 tiles: a context that acts as a 128-invocation device.
    vkqat::test::ScopedEnv env("VKQAT_DEVICE_PROFILE", "mobile");
    vkqat::ContextOptions opt;
    opt.validation = true;
    opt.on_validation_message = [](const std::string& msg) { FAIL_CHECK("Vulkan validation message: " << msg); };
    vkqat::Context mobile(opt);
    REQUIRE(mobile.info().max_workgroup_invocations == 128);
    for (const Case& c : cases_large_gemm()) {
      INFO("tiled 32x32: " << c.what);
      check_against_reference(c, seed += 10, mobile);
    }
  }
  nn::set_conv_variant(ConvVariant::Auto);
}

// Runs the backward-weight of `s` twice on the same random x and dy in one recording and
// returns its dispatches; split reductions must give both runs the same bits (no atomics).
std::vector<vkqat::DispatchShape> backward_weight_twice(const Conv2dShape& s) {
  auto& ctx = vkqat::test::ctx();
  Tensor x = upload(ctx, s.x_shape(), random_for(s.x_shape(), 1)), dy = upload(ctx, s.y_shape(), random_for(s.y_shape(), 2));
  Tensor dw1(ctx, s.w_shape()), dw2(ctx, s.w_shape());
  Recording rec(ctx);
  nn::conv2d_backward_weight(rec, s, x, dy, dw1, false);
  nn::conv2d_backward_weight(rec, s, x, dy, dw2, false);
  rec.finish();
  rec.run();
  CHECK(dw1.download() == dw2.download());
  return rec.dispatch_shapes();
}

TEST_CASE("conv2d tiled backward-weight splits K over workgroup layers when its tiles are few" *
          doctest::test_suite("conv2d")) {
  // 16 -> 16 3x3: 3 x 1 tiles, K = 2 * 28 * 28: several chunks of K, merged in order.
  nn::set_conv_variant(ConvVariant::Tiled);
  const Case c{"tiled split-K, 16->16 28x28 batch 2", {2, 16, 28, 28, 16, 3, 3, 1, 1}};
  check_against_reference(c, 900);
  const auto d = backward_weight_twice(c.s);
  CHECK(std::count_if(d.begin(), d.end(), [](const auto& e) { return e.kernel == "conv2d_bwd_weight_tiled" && e.groups.z > 1; }) == 2);
  CHECK(std::count_if(d.begin(), d.end(), [](const auto& e) { return e.label == "conv2d_bwd_weight_tiled merge"; }) == 2);
  nn::set_conv_variant(ConvVariant::Auto);
}

TEST_CASE("conv2d register-blocked variant on multi-block GEMMs matches the reference" *
          doctest::test_suite("conv2d")) {
  check_variant(ConvVariant::RegisterBlocked, cases_large_gemm());
}

// Depthwise (groups == c): stride 1, 2, 3, pad 0 / 1 / 2, 1x1 images, channel counts not
// multiples of 4, batch 1, widths that leave a partial 4-column block, 1x1 and 5x5 kernels,
// n * oh * ow large enough that the blocked backward-weight splits into several chunks, and
// widths % 4 == 0 (vec4 rows).
const std::vector<Case>& cases_depthwise() {
  static const std::vector<Case> all = {
      {"dw 3x3 s1 p1, c 6 on 7x7", {2, 6, 7, 7, 6, 3, 3, 1, 1, 6}},
      {"dw 3x3 s2 p1, batch 1, c 5 on 8x8", {1, 5, 8, 8, 5, 3, 3, 2, 1, 5}},
      {"dw 3x3 s2 p0 on 9x10", {2, 3, 9, 10, 3, 3, 3, 2, 0, 3}},
      {"dw 3x3 s1 p0 on 6x5", {1, 7, 6, 5, 7, 3, 3, 1, 0, 7}},
      {"dw 3x3 p1 on 1x1", {3, 4, 1, 1, 4, 3, 3, 1, 1, 4}},
      {"dw 3x3 s2 p1 on 1x1, batch 1", {1, 3, 1, 1, 3, 3, 3, 2, 1, 3}},
      {"dw 5x5 s1 p2 on 11x9", {2, 3, 11, 9, 3, 5, 5, 1, 2, 3}},
      {"dw 5x5 s2 p2 on 13x13", {1, 4, 13, 13, 4, 5, 5, 2, 2, 4}},
      {"dw 1x1 on 5x7", {2, 3, 5, 7, 3, 1, 1, 1, 0, 3}},
      {"dw 3x3 s3 p1 on 10x11", {1, 2, 10, 11, 2, 3, 3, 3, 1, 2}},
      {"dw 3x3 s1 p1 on 28x32, batch 9 (several backward-weight chunks, vec4 rows)", {9, 5, 28, 32, 5, 3, 3, 1, 1, 5}},
      {"dw 3x3 s1 p1 on 29x29, batch 6 (several chunks, scalar rows)", {6, 3, 29, 29, 3, 3, 3, 1, 1, 3}},
      {"dw 3x3 s2 p1 on 29x29, batch 2, c 18", {2, 18, 29, 29, 18, 3, 3, 2, 1, 18}},
      // Widths % 4 == 0: forward and backward-weight read x rows as vec4s (pad 1, 2, 0 give
      // windows starting 3, 2, 0 floats into a vec4).
      {"dw 3x3 s1 p1 on 12x8, c 7", {2, 7, 12, 8, 7, 3, 3, 1, 1, 7}},
      {"dw 5x5 s1 p2 on 6x12", {2, 3, 6, 12, 3, 5, 5, 1, 2, 3}},
      {"dw 3x3 s1 p0 on 4x4", {1, 2, 4, 4, 2, 3, 3, 1, 0, 2}},
      {"dw 3x3 s2 p1 on 16x16", {3, 4, 16, 16, 4, 3, 3, 2, 1, 4}},
  };
  return all;
}

TEST_CASE("conv2d depthwise kernels (blocked and direct) match the reference" * doctest::test_suite("conv2d")) {
  uint32_t seed = 700;
  for (nn::DepthwiseVariant v : {nn::DepthwiseVariant::Blocked, nn::DepthwiseVariant::Direct}) {
    nn::set_depthwise_variant(v);
    for (const Case& c : cases_depthwise()) {
      INFO(nn::depthwise_variant_name(v) << ": " << c.what);
      check_against_reference(c, seed += 10);
    }
  }
  nn::set_depthwise_variant(nn::DepthwiseVariant::Auto);
}

TEST_CASE("conv2d depthwise backward-weight splits large reductions into chunks, deterministically" *
          doctest::test_suite("conv2d")) {
  nn::set_depthwise_variant(nn::DepthwiseVariant::Blocked);
  const Conv2dShape s = cases_depthwise()[10].s;
  const auto d = backward_weight_twice(s);
  CHECK(std::count_if(d.begin(), d.end(), [](const auto& e) { return e.label == "conv2d_dw_bwd_weight_split merge"; }) == 2);
  CHECK(std::count_if(d.begin(), d.end(), [](const auto& e) { return e.kernel == "conv2d_dw_bwd_weight_split" && e.groups.x > 1; }) == 2);
  nn::set_depthwise_variant(nn::DepthwiseVariant::Auto);
}

TEST_CASE("conv2d rejects bad shapes" * doctest::test_suite("conv2d")) {
  auto& ctx = vkqat::test::ctx();
  const Conv2dShape s{2, 4, 6, 6, 8, 3, 3, 1, 1};
  Tensor x(ctx, {2, 3, 6, 6}), w(ctx, s.w_shape()), y(ctx, s.y_shape());
  check_throws_error([&] { Recording rec(ctx); nn::conv2d_forward(rec, s, x, w, y); }, "c_in mismatch with x");
  check_throws_error([&] { Conv2dShape{1, 1, 2, 2, 1, 5, 5, 1, 1}.validate(); }, "kernel bigger than padded input");
  check_throws_error([&] { Conv2dShape{1, 4, 6, 6, 6, 3, 3, 1, 1, 2}.validate(); }, "groups 2 with c_in 4, c_out 6");
  check_throws_error([&] { Conv2dShape{1, 4, 6, 6, 4, 3, 3, 0, 1}.validate(); }, "stride 0");
  Tensor dx(ctx, {2, 4, 6, 5});
  Tensor dy(ctx, s.y_shape());
  check_throws_error([&] { Recording rec(ctx); nn::conv2d_backward_data(rec, s, dy, w, dx, false); }, "dx shape");
  Tensor dw(ctx, {8, 4, 3, 2});
  Tensor x_ok(ctx, s.x_shape());
  check_throws_error([&] { Recording rec(ctx); nn::conv2d_backward_weight(rec, s, x_ok, dy, dw, false); }, "dw shape");
}

// Tiled forward / backward-data take 32x32 tiles when 64x64 ones would launch fewer than
// 264 workgroups (two per SM of a 132-SM GPU), and 64x64 tiles on grids that large: both
// against the reference, and which tile ran, from the invocations per workgroup.
TEST_CASE("conv2d tiled forward and backward-data pick 32x32 tiles for small grids" * doctest::test_suite("conv2d")) {
  auto& ctx = vkqat::test::ctx();
  if (ctx.info().max_workgroup_invocations < 256) return;  // 32x32 everywhere: covered above
  nn::set_conv_variant(ConvVariant::Tiled);
  struct Grid {
    Case c;
    uint32_t fwd_invocations, bwd_data_invocations;  // 256: 64x64 tiles, 64: 32x32 tiles
  };
  const Grid grids[] = {
      // ResNet-20's third stage at batch 8: N = 392, 7 x 1 tiles of 64x64 -> 13 x 2 of 32x32.
      {{"3x3 64->64 on 7x7, batch 8", {8, 64, 7, 7, 64, 3, 3, 1, 1}}, 64, 64},
      // N = 22 * 28 * 28 = 17248: 270 x 2 (forward) and 270 x 1 (backward-data) 64x64 tiles.
      {{"3x3 8->80 on 28x28, batch 22", {22, 8, 28, 28, 80, 3, 3, 1, 1}}, 256, 256},
  };
  uint32_t seed = 1300;
  for (const Grid& g : grids) {
    INFO("tile choice: " << g.c.what);
    check_against_reference(g.c, seed += 10);
    const Conv2dShape& s = g.c.s;
    Tensor x(ctx, s.x_shape()), w(ctx, s.w_shape()), y(ctx, s.y_shape()), dx(ctx, s.x_shape());
    Recording rec(ctx);
    nn::conv2d_forward(rec, s, x, w, y);
    nn::conv2d_backward_data(rec, s, y, w, dx, false);
    REQUIRE(rec.dispatch_shapes().size() == 2);
    CHECK(rec.dispatch_shapes()[0].invocations_per_workgroup() == g.fwd_invocations);
    CHECK(rec.dispatch_shapes()[1].invocations_per_workgroup() == g.bwd_data_invocations);
    if (g.fwd_invocations == 64)
      CHECK(rec.dispatch_shapes()[0].workgroups() == uint64_t((s.n * s.out_h() * s.out_w() + 31) / 32) * ((s.c_out + 31) / 32));
  }
  nn::set_conv_variant(ConvVariant::Auto);
}

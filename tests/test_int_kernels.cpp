// Integer inference kernels (shaders/int_*.comp) vs the CPU reference of the integer
// pipeline (src/quant/int_reference.cpp), bit for bit, on random codes: every conv mode,
// 2/4/8-bit weights, 4/8-bit activations, awkward shapes, on both conv paths (portable and
// integer dot product, the latter forced where the device emulates it); the
// VKQAT_INT_CONV override; the depthwise conv and max pool on codes; code packing round
// trips; bad shapes throw.
#include <algorithm>
#include <cstdlib>
#include <optional>
#include <random>

#include "backend/error.h"
#include "quant/int_engine.h"
#include "quant/int_reference.h"
#include "testutil.h"

using namespace vkqat;
using quant::IntConv;
using quant::ref::IntConvMode;

namespace {

std::vector<int32_t> random_codes(size_t n, int levels, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> v(n);
  for (auto& x : v) x = int32_t(rng() % uint32_t(levels + 1));
  return v;
}

IntConv random_conv(int c_in, int c_out, int k, int stride, int wbits, int levels, IntConvMode mode, uint32_t seed,
                    int groups = 1) {
  IntConv c;
  c.name = "test_conv";
  c.c_in = c_in, c.c_out = c_out, c.k = k, c.stride = stride, c.pad = k / 2, c.wbits = wbits, c.groups = groups;
  const int gi = c_in / groups;
  std::vector<int32_t> codes = random_codes(size_t(c_out) * k * k * gi, (1 << wbits) - 1, seed);
  c.codes = quant::pack_codes(std::vector<int>(codes.begin(), codes.end()), c_out, k * k, gi, wbits);
  if (mode == IntConvMode::Raw) return c;
  c.levels = levels;
  std::mt19937 rng(seed + 1);
  for (int o = 0; o < c_out; ++o) {
    // Magnitudes like the exporter's: multipliers near 2^29..2^30, varied shifts and signs.
    const int shift = 20 + int(rng() % 30);
    c.rq.shift.push_back(shift);
    c.rq.mult.push_back(int32_t(rng() % (1u << 30)) * (o % 5 == 4 ? -1 : 1));
    c.rq.mult2.push_back(int32_t(rng() % (1u << 29)) - (1 << 27));
    const double scale = std::ldexp(1.0, shift) * levels;
    c.rq.bias.push_back(int64_t((double(rng() % 2001) / 1000.0 - 0.5) * scale));
  }
  // Bring acc * mult into the range where codes vary: scale down the multipliers.
  for (int o = 0; o < c_out; ++o) {
    const double fan = double(gi) * k * k * ((1 << wbits) - 1) * 40.0;
    c.rq.mult[o] = int32_t(double(c.rq.mult[o]) * std::ldexp(1.0, c.rq.shift[o] - 30) * levels / fan);
    c.rq.mult2[o] = int32_t(double(c.rq.mult2[o]) * std::ldexp(1.0, c.rq.shift[o] - 30) * levels / fan);
  }
  return c;
}

void check_conv(int n, int c_in, int h, int w, int c_out, int k, int stride, int wbits, IntConvMode mode,
                uint32_t seed, quant::IntConvPath path = quant::IntConvPath::Portable, int levels = 15, int groups = 1,
                int x_offset = 0) {
  IntConv c = random_conv(c_in, c_out, k, stride, wbits, levels, mode, seed, groups);
  c.x_offset = x_offset;  // signed input codes a = level + x_offset in [0, 2 x_offset]
  const int oh = (h + 2 * c.pad - k) / stride + 1, ow = (w + 2 * c.pad - k) / stride + 1;
  const int x_levels = mode == IntConvMode::Stem ? 255 : x_offset ? 2 * x_offset : levels;
  std::vector<int32_t> x = random_codes(size_t(n) * c_in * h * w, x_levels, seed + 7);
  std::vector<int32_t> res = random_codes(size_t(n) * c_out * oh * ow, 4000, seed + 9);
  for (auto& r : res) r -= 2000;  // a downsample's raw accumulator is signed
  auto want = quant::ref::int_conv(c, mode, x, n, h, w, mode == IntConvMode::Residual ? &res : nullptr);

  Context& ctx = test::ctx();
  quant::IntConvGpu g(ctx, c, path);
  nn::Tensor xt(ctx, {int(x.size())}, nn::DType::I32), rt(ctx, {int(res.size())}, nn::DType::I32),
      yt(ctx, {int(want.size())}, nn::DType::I32);
  xt.upload_u32(std::vector<uint32_t>(x.begin(), x.end()));
  rt.upload_u32(std::vector<uint32_t>(res.begin(), res.end()));
  Recording rec(ctx);
  quant::int_conv_forward(rec, g, mode, xt, n, h, w, mode == IntConvMode::Residual ? &rt : nullptr, yt);
  rec.finish();
  rec.run();
  const std::vector<uint32_t> got = yt.download_u32();
  size_t bad = 0, first = 0, distinct_codes = 0;
  std::vector<bool> seen(256, false);
  for (size_t i = 0; i < got.size(); ++i) {
    if (int32_t(got[i]) != want[i] && !bad++) first = i;
    if (mode != IntConvMode::Raw && want[i] >= 0 && want[i] < 256 && !seen[size_t(want[i])])
      seen[size_t(want[i])] = true, ++distinct_codes;
  }
  INFO("n" << n << " c" << c_in << "->" << c_out << " " << h << "x" << w << " k" << k << " s" << stride << " w"
           << wbits << "bit a" << levels << " groups " << groups << " mode " << int(mode) << " x_offset " << x_offset
           << " path "
           << (path == quant::IntConvPath::Dot ? "dot" : "portable"));
  CHECK_MESSAGE(bad == 0, bad << " of " << got.size() << " differ, first [" << first << "] got " << int32_t(got[first])
                              << " want " << want[first]);
  if (mode != IntConvMode::Raw) CHECK(distinct_codes >= 3);  // the test exercises the requantization
}


}  // namespace

TEST_CASE("packing codes at 2/4/8-bit containers round-trips, 16/8/4 per word" * doctest::test_suite("int")) {
  for (int bits : {1, 2, 3, 4, 5, 8}) {
    const int rows = 3, taps = 9, c_in = 21;
    std::vector<int32_t> r = random_codes(size_t(rows) * taps * c_in, (1 << bits) - 1, uint32_t(bits));
    std::vector<int> codes(r.begin(), r.end());
    auto words = quant::pack_codes(codes, rows, taps, c_in, bits);
    const int per_word = 32 / quant::int_container_bits(bits);
    CHECK(words.size() == size_t(rows) * taps * ((c_in + per_word - 1) / per_word));
    CHECK(quant::unpack_codes(words, rows, taps, c_in, bits) == codes);
  }
  CHECK(quant::int_container_bits(2) == 2);
  CHECK(quant::int_container_bits(4) == 4);
  CHECK(quant::int_container_bits(8) == 8);
  CHECK_THROWS_AS(quant::pack_codes({4}, 1, 1, 1, 2), Error);  // 4 does not fit 2 bits
  CHECK_THROWS_AS(quant::int_container_bits(9), Error);
}

TEST_CASE("requantization rounds half up and clamps, in 64 bits" * doctest::test_suite("int")) {
  using quant::ref::int_requant;
  CHECK(int_requant(3 << 3, 4, 15) == 2);   // 1.5 -> 2
  CHECK(int_requant(5 << 2, 4, 15) == 1);   // 1.25 -> 1
  CHECK(int_requant(-7, 4, 15) == 0);
  CHECK(int_requant(int64_t(1) << 50, 40, 15) == 15);
  CHECK(int_requant((int64_t(9) << 40) + (int64_t(1) << 39), 41, 255) == 5);  // 4.75 -> 5
}

TEST_CASE("int_conv matches the CPU integer reference bit for bit" * doctest::test_suite("int")) {
  uint32_t seed = 100;
  for (int wbits : {2, 4, 8}) {
    check_conv(2, 16, 9, 9, 16, 3, 1, wbits, IntConvMode::Requant, seed++);
    check_conv(1, 5, 7, 5, 12, 3, 2, wbits, IntConvMode::Requant, seed++);   // odd, stride 2, batch 1
    check_conv(2, 19, 6, 7, 10, 3, 1, wbits, IntConvMode::Residual, seed++); // channels not multiples of 8/16
    check_conv(3, 1, 11, 10, 4, 3, 1, wbits, IntConvMode::Stem, seed++);     // stem: 1 in channel, border sums
    check_conv(2, 3, 8, 8, 6, 3, 1, wbits, IntConvMode::Stem, seed++);
    check_conv(2, 12, 9, 9, 20, 1, 2, wbits, IntConvMode::Raw, seed++);      // 1x1 stride 2 downsample
    check_conv(1, 17, 1, 1, 9, 3, 1, wbits, IntConvMode::Requant, seed++);   // 1x1 image
    check_conv(2, 24, 6, 6, 96, 3, 1, wbits, IntConvMode::Requant, seed++);  // c_out >= 80: many channel blocks
    check_conv(2, 40, 5, 5, 80, 1, 1, wbits, IntConvMode::Raw, seed++);      // 1x1, 80 out channels
  }
}

TEST_CASE("int_conv_dot (integer dot product) matches the CPU integer reference bit for bit" *
          doctest::test_suite("int")) {
  if (test::lacks_integer_dot_product()) return;
  const auto dot = quant::IntConvPath::Dot;
  uint32_t seed = 300;
  for (int wbits : {2, 4, 8}) {
    check_conv(2, 16, 9, 9, 16, 3, 1, wbits, IntConvMode::Requant, seed++, dot);
    check_conv(1, 5, 7, 5, 12, 3, 2, wbits, IntConvMode::Requant, seed++, dot);    // c_in 5: a partial word
    check_conv(2, 19, 6, 7, 10, 3, 1, wbits, IntConvMode::Residual, seed++, dot);  // c_in 19, c_out 10
    check_conv(3, 1, 11, 10, 4, 3, 1, wbits, IntConvMode::Stem, seed++, dot);      // 1 channel, border sums
    check_conv(2, 3, 8, 8, 6, 3, 1, wbits, IntConvMode::Stem, seed++, dot);
    check_conv(2, 12, 9, 9, 20, 1, 2, wbits, IntConvMode::Raw, seed++, dot);       // 1x1 stride 2 downsample
    check_conv(2, 7, 9, 9, 5, 1, 2, wbits, IntConvMode::Raw, seed++, dot);         // ... with a partial word
    check_conv(1, 17, 1, 1, 9, 3, 1, wbits, IntConvMode::Requant, seed++, dot);    // 1x1 image
    check_conv(2, 24, 6, 6, 96, 3, 1, wbits, IntConvMode::Requant, seed++, dot);   // c_out >= 80
    check_conv(2, 40, 5, 5, 80, 1, 1, wbits, IntConvMode::Raw, seed++, dot);       // 1x1, 80 out channels
    // 8-bit activations (codes up to 255: full uint8 lanes), both paths.
    for (auto path : {quant::IntConvPath::Portable, dot}) {
      check_conv(2, 13, 7, 6, 11, 3, 1, wbits, IntConvMode::Requant, seed++, path, 255);
      check_conv(1, 6, 5, 9, 8, 3, 2, wbits, IntConvMode::Residual, seed++, path, 255);
    }
  }
  // The largest sums: 8-bit weights and activations all at their maximum, 64 in channels
  // (|acc| = 9 * 64 * 255 * 255 at the centre), raw accumulators on both paths.
  Context& ctx = test::ctx();
  IntConv c = random_conv(64, 8, 3, 1, 8, 255, IntConvMode::Raw, 9);
  c.codes = quant::pack_codes(std::vector<int>(size_t(8) * 9 * 64, 255), 8, 9, 64, 8);
  const std::vector<int32_t> x(size_t(64) * 16, 255);
  const auto want = quant::ref::int_conv(c, IntConvMode::Raw, x, 1, 4, 4);
  CHECK(want[5] == 9 * 64 * 255 * 255);
  for (auto path : {quant::IntConvPath::Portable, dot}) {
    quant::IntConvGpu g(ctx, c, path);
    nn::Tensor xt(ctx, {int(x.size())}, nn::DType::I32), yt(ctx, {int(want.size())}, nn::DType::I32);
    xt.upload_u32(std::vector<uint32_t>(x.begin(), x.end()));
    Recording rec(ctx);
    quant::int_conv_forward(rec, g, IntConvMode::Raw, xt, 1, 4, 4, nullptr, yt);
    rec.finish();
    rec.run();
    const auto got = yt.download_u32();
    CHECK(std::vector<int32_t>(got.begin(), got.end()) == want);
  }
}

TEST_CASE("VKQAT_INT_CONV picks the integer conv path; the default follows the device" * doctest::test_suite("int")) {
  Context& ctx = test::ctx();
  const DeviceInfo& d = ctx.info();
  {
    test::ScopedEnv none("VKQAT_INT_CONV", "");
    const bool accelerated = d.integer_dot_product_enabled && d.integer_dot_4x8_packed_unsigned_accelerated;
    CHECK((quant::int_conv_path(ctx) == quant::IntConvPath::Dot) == accelerated);
    CHECK(quant::int_conv_variant(ctx).rfind(accelerated ? "dot" : "portable", 0) == 0);
    MESSAGE(d.name << ": " << quant::int_conv_variant(ctx));
  }
  {
    test::ScopedEnv portable("VKQAT_INT_CONV", "portable");
    CHECK(quant::int_conv_path(ctx) == quant::IntConvPath::Portable);
    CHECK(quant::int_conv_variant(ctx) == "portable (forced by VKQAT_INT_CONV)");
  }
  {
    test::ScopedEnv bogus("VKQAT_INT_CONV", "fast");
    CHECK_THROWS_WITH_AS(quant::int_conv_path(ctx), doctest::Contains("portable or dot"), Error);
  }
  test::ScopedEnv dot("VKQAT_INT_CONV", "dot");
  if (!d.integer_dot_product_enabled) {
    CHECK_THROWS_WITH_AS(quant::int_conv_path(ctx), doctest::Contains("shaderIntegerDotProduct"), Error);
    return;
  }
  CHECK(quant::int_conv_path(ctx) == quant::IntConvPath::Dot);
  CHECK(quant::int_conv_variant(ctx).rfind("dot (forced by VKQAT_INT_CONV", 0) == 0);
  // Layers built without an explicit path follow the override.
  const IntConv c = random_conv(6, 4, 3, 1, 4, 15, IntConvMode::Requant, 3);
  const quant::IntConvGpu g(ctx, c);
  CHECK(g.path == quant::IntConvPath::Dot);
  CHECK(g.codes.numel() == 4 * 9 * 2);  // 8-bit containers: 2 words for 6 channels
}

TEST_CASE("int_conv_dw (depthwise) matches the CPU integer reference bit for bit; the dot path leaves it portable" *
          doctest::test_suite("int")) {
  uint32_t seed = 300;
  for (int wbits : {2, 4, 8})
    for (IntConvMode mode : {IntConvMode::Requant, IntConvMode::Stem, IntConvMode::Residual, IntConvMode::Raw}) {
      check_conv(2, 7, 9, 11, 7, 3, 1, wbits, mode, seed++, quant::IntConvPath::Portable, 15, 7);  // odd sizes
      check_conv(1, 13, 6, 5, 13, 3, 2, wbits, mode, seed++, quant::IntConvPath::Portable, 255, 13);  // stride 2
      check_conv(3, 5, 7, 7, 5, 5, 1, wbits, mode, seed++, quant::IntConvPath::Portable, 7, 5);      // 5x5
      check_conv(1, 33, 1, 3, 33, 3, 2, wbits, mode, seed++, quant::IntConvPath::Portable, 15, 33);  // 1-row image
    }
  // A depthwise layer keeps its own (portable) shader whatever path is asked for.
  Context& ctx = test::ctx();
  if (!test::lacks_integer_dot_product()) {
    const quant::IntConvGpu g(ctx, random_conv(6, 6, 3, 1, 4, 15, IntConvMode::Requant, 3, 6), quant::IntConvPath::Dot);
    CHECK(g.path == quant::IntConvPath::Portable);
    check_conv(2, 6, 5, 5, 6, 3, 1, 4, IntConvMode::Residual, 41, quant::IntConvPath::Dot, 15, 6);
  }
  CHECK_THROWS_WITH_AS(quant::IntConvGpu(ctx, random_conv(8, 8, 3, 1, 4, 15, IntConvMode::Requant, 3, 2)),
                       doctest::Contains("neither 1 nor depthwise"), Error);
}

TEST_CASE("int_maxpool (max pool on codes) matches the CPU reference; bad geometry throws" *
          doctest::test_suite("int")) {
  Context& ctx = test::ctx();
  struct Case {
    int n, c, h, w, k, s, p;
  };
  uint32_t seed = 500;
  for (const Case& t : {Case{2, 3, 9, 9, 3, 2, 1}, Case{1, 5, 8, 7, 2, 2, 0}, Case{3, 2, 5, 6, 3, 1, 1},
                        Case{1, 17, 13, 13, 3, 2, 1}, Case{2, 4, 1, 1, 1, 1, 0}, Case{1, 3, 2, 3, 3, 2, 1}}) {
    INFO("n" << t.n << " c" << t.c << " " << t.h << "x" << t.w << " k" << t.k << " s" << t.s << " p" << t.p);
    const auto x = random_codes(size_t(t.n) * t.c * t.h * t.w, 15, seed++);
    const auto want = quant::ref::int_maxpool(x, t.n, t.c, t.h, t.w, t.k, t.s, t.p);
    nn::Tensor xt(ctx, {int(x.size())}, nn::DType::I32), yt(ctx, {int(want.size())}, nn::DType::I32);
    xt.upload_u32(std::vector<uint32_t>(x.begin(), x.end()));
    Recording rec(ctx);
    quant::int_maxpool_forward(rec, xt, t.n * t.c, t.h, t.w, t.k, t.s, t.p, yt);
    rec.finish();
    rec.run();
    const auto got = yt.download_u32();
    CHECK(std::vector<int32_t>(got.begin(), got.end()) == want);
    // The reference is a max: every output is one of its window's inputs and none is smaller.
    if (t.k == 3 && t.s == 2 && t.p == 1) CHECK(want[0] == std::max({x[0], x[1], x[size_t(t.w)], x[size_t(t.w) + 1]}));
  }
  nn::Tensor x(ctx, {16}, nn::DType::I32), y(ctx, {4}, nn::DType::I32);
  Recording bad(ctx);
  CHECK_THROWS_AS(quant::int_maxpool_forward(bad, x, 1, 4, 4, 2, 2, 2, y), Error);  // padding > kernel / 2
  CHECK_THROWS_AS(quant::int_maxpool_forward(bad, x, 1, 4, 4, 3, 1, 1, y), Error);  // y too small
}

TEST_CASE("int_pool matches the reference; bad shapes throw" * doctest::test_suite("int")) {
  Context& ctx = test::ctx();
  const int rows = 13, hw = 49;
  auto x = random_codes(size_t(rows) * hw, 15, 5);
  auto want = quant::ref::int_pool(x, 1, rows, hw, 187654321, 35, 15);
  nn::Tensor xt(ctx, {rows * hw}, nn::DType::I32), yt(ctx, {rows}, nn::DType::I32);
  xt.upload_u32(std::vector<uint32_t>(x.begin(), x.end()));
  Recording rec(ctx);
  quant::int_pool_forward(rec, xt, rows, hw, 187654321, 35, 15, yt);
  rec.finish();
  rec.run();
  auto got = yt.download_u32();
  CHECK(std::vector<int32_t>(got.begin(), got.end()) == want);

  IntConv c = random_conv(4, 8, 3, 1, 4, 15, IntConvMode::Requant, 1);
  quant::IntConvGpu g(ctx, c);
  nn::Tensor small(ctx, {10}, nn::DType::I32), y(ctx, {8 * 25}, nn::DType::I32), fy(ctx, {8 * 25});
  Recording bad(ctx);
  CHECK_THROWS_AS(quant::int_conv_forward(bad, g, IntConvMode::Requant, small, 1, 5, 5, nullptr, y), Error);
  nn::Tensor x4(ctx, {4 * 25}, nn::DType::I32);
  CHECK_THROWS_AS(quant::int_conv_forward(bad, g, IntConvMode::Requant, x4, 1, 5, 5, nullptr, fy), Error);  // float y
  CHECK_THROWS_AS(quant::int_conv_forward(bad, g, IntConvMode::Residual, x4, 1, 5, 5, nullptr, y), Error);  // no shortcut
  CHECK_THROWS_AS(quant::int_conv_forward(bad, g, IntConvMode::Raw, x4, 1, 5, 5, nullptr, y), Error);  // has requant
}

TEST_CASE("signed (offset) input codes: every conv kernel subtracts the offset times the weights inside the image" *
          doctest::test_suite("int")) {
  // Offset codes a = c + z stand for c in [-z, z]; zero padding stands for 0, so the kernels
  // subtract z times the border sum, which differs at the edges: padded 3x3 convs, odd sizes,
  // 1x1 images and 1x1 kernels, depthwise; offsets of 3-, 4- and 8-bit signed codes.
  std::vector<quant::IntConvPath> paths{quant::IntConvPath::Portable};
  if (!test::lacks_integer_dot_product()) paths.push_back(quant::IntConvPath::Dot);
  uint32_t seed = 700;
  for (quant::IntConvPath path : paths)
    for (IntConvMode mode : {IntConvMode::Requant, IntConvMode::Residual, IntConvMode::Raw}) {
      for (int z : {3, 127}) {
        const int out_levels = z == 127 ? 254 : 14;  // signed outputs too: levels 2z'
        check_conv(2, 13, 7, 6, 11, 3, 1, 4, mode, seed++, path, out_levels, 1, z);
        check_conv(2, 24, 5, 5, 20, 1, 1, 4, mode, seed++, path, out_levels, 1, z);  // 1x1 kernel (MobileNetV2's expand)
      }
      check_conv(2, 19, 1, 1, 9, 3, 1, 8, mode, seed++, path, 14, 1, 7);  // 1x1 image: only the centre tap
      if (path == quant::IntConvPath::Portable)  // depthwise: one shader whatever the path
        for (int z : {3, 127}) check_conv(1, 9, 6, 5, 9, 3, 1, 4, mode, seed++, path, 14, 9, z);
    }
  // The offset matters: the same codes read as unsigned give other accumulators.
  IntConv c = random_conv(4, 3, 3, 1, 4, 0, IntConvMode::Raw, 5);
  const std::vector<int32_t> x = random_codes(size_t(4) * 25, 14, 6);
  const auto plain = quant::ref::int_conv(c, IntConvMode::Raw, x, 1, 5, 5);
  c.x_offset = 7;
  const auto offset = quant::ref::int_conv(c, IntConvMode::Raw, x, 1, 5, 5);
  CHECK(plain != offset);
  // ... and the reference is the sum of (2i - nw)(a - z) over the taps inside the image.
  const std::vector<int> w = quant::unpack_codes(c.codes, 3, 9, 4, 4);
  int64_t want = 0;  // output channel 1, corner (0, 0): taps (1..2, 1..2) of the kernel
  for (int ci = 0; ci < 4; ++ci)
    for (int kh = 1; kh < 3; ++kh)
      for (int kw = 1; kw < 3; ++kw)
        want += int64_t(2 * w[(size_t(1) * 9 + kh * 3 + kw) * 4 + ci] - 15) * (x[size_t(ci) * 25 + (kh - 1) * 5 + kw - 1] - 7);
  CHECK(offset[25] == want);
}

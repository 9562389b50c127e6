// Exact evaluation on integer grids (nn/ops/grid.h): grid_levels / grid_rescale equal their
// CPU twins bit for bit on random data and awkward sizes, with and without scale tensors; a
// DoReFa (+SAT) conv evaluated on a PACT-grid input gives exactly float(integer sum * step):
// the sum itself carries no rounding error, whatever the channel count.
#include <cmath>

#include "nn/model/layers.h"
#include "nn/ops/grid.h"
#include "quant/policy.h"
#include "testutil.h"

using namespace vkqat;
using nn::Grid;
using nn::Tensor;

namespace {

std::vector<float> run_levels(const std::vector<float>& x, const Tensor* scale, float mul) {
  Context& ctx = test::ctx();
  Tensor tx(ctx, {int(x.size())}), ty(ctx, {int(x.size())});
  tx.upload(x);
  Recording rec(ctx);
  nn::grid_levels(rec, tx, Grid{scale, mul}, ty);
  rec.finish();
  rec.run();
  return ty.download();
}

}  // namespace

TEST_CASE("grid_levels == CPU twin, on and off the grid, with and without a scale tensor" *
          doctest::test_suite("grid")) {
  Context& ctx = test::ctx();
  Tensor alpha(ctx, {1});
  alpha.upload({2.75f});
  for (int n : {1, 7, 257, 4 * 64 * 4 + 3}) {
    CAPTURE(n);
    // On the grid: integers times the step, as a quantizer computes them (one rounding).
    std::vector<float> on(static_cast<size_t>(n));
    const std::vector<float> off = test::random_vector(size_t(n), uint32_t(n), -40.f, 40.f);
    const float step = 2.75f * (1.f / 15.f);
    for (int i = 0; i < n; ++i) on[size_t(i)] = float((i * 7) % 16) * step;
    const auto got_on = run_levels(on, &alpha, 1.f / 15.f);
    CHECK(got_on == nn::ref::grid_levels(on, 2.75f, 1.f / 15.f));
    for (int i = 0; i < n; ++i) CHECK(got_on[size_t(i)] == float((i * 7) % 16));
    CHECK(run_levels(off, nullptr, 0.37f) == nn::ref::grid_levels(off, 1.f, 0.37f));
    CHECK(run_levels(off, &alpha, 0.f) == std::vector<float>(size_t(n), 0.f));  // step 0 -> 0
  }
}

TEST_CASE("grid_rescale == CPU twin for every combination of scale tensors" * doctest::test_suite("grid")) {
  Context& ctx = test::ctx();
  Tensor a(ctx, {2}), b(ctx, {1});
  a.upload({1.3f, -9.f});  // element 0 is the scale
  b.upload({0.61f});
  for (int n : {5, 1030}) {
    const auto y0 = test::random_vector(size_t(n), 3u + uint32_t(n), -500.f, 500.f);
    for (int use = 0; use < 4; ++use) {
      CAPTURE(n);
      CAPTURE(use);
      Tensor y(ctx, {n});
      y.upload(y0);
      Recording rec(ctx);
      nn::grid_rescale(rec, y, Grid{use & 1 ? &a : nullptr, 0.25f}, Grid{use & 2 ? &b : nullptr, 1.f / 7.f});
      rec.finish();
      rec.run();
      CHECK(y.download() == nn::ref::grid_rescale(y0, use & 1 ? 1.3f : 1.f, 0.25f, use & 2 ? 0.61f : 1.f, 1.f / 7.f));
    }
  }
}

namespace {

// A W{wbits} conv (DoReFa, optionally + SAT-conv) on a PACT-grid input, evaluated exactly.
void check_exact_conv(nn::Conv2dShape s, int wbits, int abits, bool sat_conv) {
  Context& ctx = test::ctx();
  quant::QuantConfig q;
  q.wbits = wbits;
  q.abits = abits;
  q.sat_conv = sat_conv;
  auto policy = quant::make_quant_policy(q);
  nn::Conv2dLayer conv(ctx, "layer1.0.conv1", s);
  nn::InitRng rng(7);
  conv.init(rng);
  conv.set_quantizer(ctx, policy->weight(ctx, conv.name, conv.weight.value, nn::LayerRole::Middle));
  REQUIRE(conv.quant->grid());

  const int na = (1 << abits) - 1, nw = (1 << wbits) - 1;
  const float alpha_v = 3.1f, a_step = alpha_v * (1.f / float(na));
  std::vector<float> codes(size_t(s.n) * s.c_in * s.h * s.w), x(codes.size());
  std::mt19937 gen(11);
  for (size_t i = 0; i < codes.size(); ++i) codes[i] = float(gen() % uint32_t(na + 1)), x[i] = codes[i] * a_step;
  Tensor alpha(ctx, {1}), tx(ctx, s.x_shape()), y_exact(ctx, s.y_shape()), y_float(ctx, s.y_shape());
  alpha.upload({alpha_v});
  tx.upload(x);
  Tensor scratch(ctx, {int(codes.size()) + 5});
  conv.set_input_grid(ctx, Grid{&alpha, 1.f / float(na)}, &scratch);
  REQUIRE(conv.exact_eval());
  Recording rec(ctx);
  conv.forward(rec, tx, y_exact, false);
  conv.forward(rec, tx, y_float, true);  // training: the plain float convolution
  rec.finish();
  rec.run();

  // The weight step: 1/nw, times the SAT factor (the quantizer's own, read back via wq).
  const std::vector<float> wq = conv.wq.download();
  float w_step = 1.f / float(nw);
  if (sat_conv) {
    float max_abs = 0;
    for (float v : wq) max_abs = std::max(max_abs, std::fabs(v));
    // wq = factor (2 level - nw) / nw with the extreme level +-nw present: factor = max|wq|.
    w_step = (1.f / float(nw)) * max_abs;
  }
  std::vector<double> wl(wq.size());
  for (size_t i = 0; i < wq.size(); ++i) {
    wl[i] = std::nearbyint(double(wq[i]) / double(w_step));
    REQUIRE(std::fabs(double(wq[i]) / double(w_step) - wl[i]) < 1e-3);  // on the grid
  }
  const float s_total = (a_step) * w_step;
  const auto got = y_exact.download(), plain = y_float.download();
  const int oh = s.out_h(), ow = s.out_w();
  size_t exact = 0, plain_differs = 0;
  for (int b = 0; b < s.n; ++b)
    for (int o = 0; o < s.c_out; ++o)
      for (int r = 0; r < oh; ++r)
        for (int c = 0; c < ow; ++c) {
          double acc = 0;  // exact: integers below 2^53
          for (int ci = 0; ci < s.c_in; ++ci)
            for (int kh = 0; kh < s.kh; ++kh)
              for (int kw = 0; kw < s.kw; ++kw) {
                const int iy = r * s.stride - s.pad + kh, ix = c * s.stride - s.pad + kw;
                if (iy < 0 || iy >= s.h || ix < 0 || ix >= s.w) continue;
                acc += wl[((size_t(o) * s.c_in + ci) * s.kh + kh) * s.kw + kw] *
                       codes[((size_t(b) * s.c_in + ci) * s.h + iy) * s.w + ix];
              }
          const size_t i = ((size_t(b) * s.c_out + o) * oh + r) * ow + c;
          const float want = float(acc) * s_total;
          exact += got[i] == want;
          plain_differs += plain[i] != want;
          CHECK(std::fabs(plain[i] - want) <= 1e-4f * (1.f + std::fabs(want)));
        }
  MESSAGE("exact " << exact << "/" << got.size() << "; the float conv differs from it at " << plain_differs);
  CHECK(exact == got.size());
}

}  // namespace

TEST_CASE("exact evaluation: DoReFa conv on a PACT grid == float(integer sum * step), awkward shapes" *
          doctest::test_suite("grid")) {
  auto shape = [](int n, int c_in, int h, int w, int c_out, int k, int stride) {
    nn::Conv2dShape s;
    s.n = n, s.c_in = c_in, s.h = h, s.w = w, s.c_out = c_out, s.kh = s.kw = k, s.stride = stride, s.pad = k / 2;
    return s;
  };
  SUBCASE("3x3, odd sizes, stride 2, W4A4") { check_exact_conv(shape(2, 3, 7, 9, 5, 3, 2), 4, 4, false); }
  SUBCASE("1x1 stride 2 (downsample), W2A3") { check_exact_conv(shape(3, 16, 9, 6, 24, 1, 2), 2, 3, false); }
  SUBCASE("3x3, 64 channels (a float sum rounds), W4A4 + SAT-conv") {
    check_exact_conv(shape(2, 64, 7, 7, 64, 3, 1), 4, 4, true);
  }
}

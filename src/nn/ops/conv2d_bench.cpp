// `vkqat bench` entries for conv2d (and the shared timing helper): forward, backward-data
// and backward-weight on the ResNet-20 convolution shapes at batch 128, and the depthwise
// kernels on MobileNetV2-like shapes (the selected variant; optionally the old direct kernels
// alternating with the blocked ones).
#include <algorithm>
#include <chrono>
#include <memory>
#include <random>

#include "nn/bench.h"
#include "nn/ops/conv2d.h"

namespace vkqat::nn {

double time_recording_ms(Recording& rec, int warmup, int iters) {
  if (!rec.finished()) rec.finish();
  for (int i = 0; i < warmup; ++i) rec.run();
  std::vector<double> ms;
  for (int i = 0; i < std::max(iters, 1); ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    rec.run();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

std::vector<float> bench_ramp(int64_t n, float scale, float offset) {
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[size_t(i)] = offset + scale * float((i * 7919) % 2001 - 1000) / 1000.f;
  return v;
}

BenchRecord bench_repeated_op(Recording& rec, bool quick, const std::string& name, double bytes, double flops,
                              const std::string& variant) {
  rec.finish();
  const double ms = time_recording_ms(rec, quick ? 1 : 2, quick ? 3 : 10) / kBenchRepeats;
  return BenchRecord{name, ms, flops / (ms * 1e6), bytes / (ms * 1e6), variant};
}

namespace {

Tensor random_tensor(Context& ctx, const std::vector<int>& shape, uint32_t seed) {
  Tensor t(ctx, shape);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.f, 1.f);
  std::vector<float> v(size_t(t.numel()));
  for (float& f : v) f = dist(rng);
  t.upload(v);
  return t;
}

}  // namespace

std::vector<BenchRecord> bench_conv2d(Context& ctx, bool quick) {
  // ResNet-20 (CIFAR layout, here on 28x28 inputs): the 3x3 convs of each stage, the
  // stride-2 3x3 convs entering stages 2 and 3, and the 1x1 stride-2 downsample convs.
  std::vector<Conv2dShape> shapes = {{128, 16, 28, 28, 16, 3, 3, 1, 1}};
  if (!quick) {
    shapes.push_back({128, 16, 28, 28, 32, 3, 3, 2, 1});
    shapes.push_back({128, 32, 14, 14, 32, 3, 3, 1, 1});
    shapes.push_back({128, 32, 14, 14, 64, 3, 3, 2, 1});
    shapes.push_back({128, 64, 7, 7, 64, 3, 3, 1, 1});
    shapes.push_back({128, 16, 28, 28, 32, 1, 1, 2, 0});
    shapes.push_back({128, 32, 14, 14, 64, 1, 1, 2, 0});
    // The auxiliary module's 1x1 adaptors (stride 1, channels kept).
    shapes.push_back({128, 16, 28, 28, 16, 1, 1, 1, 0});
    shapes.push_back({128, 32, 14, 14, 32, 1, 1, 1, 0});
    shapes.push_back({128, 64, 7, 7, 64, 1, 1, 1, 0});
  }
  const char* variant = conv_variant_name(conv_variant(ctx));
  std::vector<BenchRecord> out;
  for (const Conv2dShape& s : shapes) {
    Tensor x = random_tensor(ctx, s.x_shape(), 1), w = random_tensor(ctx, s.w_shape(), 2);
    Tensor dy = random_tensor(ctx, s.y_shape(), 3);
    Tensor y(ctx, s.y_shape()), dx(ctx, s.x_shape()), dw(ctx, s.w_shape());
    const std::string dims = "n" + std::to_string(s.n) + " c" + std::to_string(s.c_in) + "->" +
                             std::to_string(s.c_out) + " " + std::to_string(s.h) + "x" + std::to_string(s.w) +
                             " k" + std::to_string(s.kh) + "s" + std::to_string(s.stride);
    for (int op = 0; op < 3; ++op) {
      Recording rec(ctx);
      if (op == 0) conv2d_forward(rec, s, x, w, y);
      if (op == 1) conv2d_backward_data(rec, s, dy, w, dx, false);
      if (op == 2) conv2d_backward_weight(rec, s, x, dy, dw, false);
      const double ms = time_recording_ms(rec, 2, quick ? 5 : 7);
      static const char* names[] = {"conv2d_fwd ", "conv2d_bwd_data ", "conv2d_bwd_weight "};
      out.push_back({names[op] + dims, ms, s.flops() / ms * 1e-6, 0.0, variant});
    }
  }
  return out;
}

std::vector<BenchRecord> bench_conv2d_depthwise(Context& ctx, bool quick, bool with_direct) {
  // MobileNetV2-like depthwise 3x3 layers at batch 32: the 144-channel expansion at 56x56
  // (stride 1 and the stride-2 one leaving the stage), 384 channels at 14x14, 960 at 7x7.
  std::vector<Conv2dShape> shapes = {{32, 144, 56, 56, 144, 3, 3, 1, 1, 144}, {32, 384, 14, 14, 384, 3, 3, 1, 1, 384}};
  if (!quick) {
    shapes.push_back({32, 144, 56, 56, 144, 3, 3, 2, 1, 144});
    shapes.push_back({32, 960, 7, 7, 960, 3, 3, 1, 1, 960});
  }
  const DepthwiseVariant chosen = depthwise_variant();
  const std::vector<DepthwiseVariant> variants =
      with_direct ? std::vector<DepthwiseVariant>{DepthwiseVariant::Direct, DepthwiseVariant::Blocked}
                  : std::vector<DepthwiseVariant>{chosen};
  const int rounds = quick ? 2 : 3;
  std::vector<BenchRecord> out;
  for (const Conv2dShape& s : shapes) {
    Tensor x = random_tensor(ctx, s.x_shape(), 1), w = random_tensor(ctx, s.w_shape(), 2);
    Tensor dy = random_tensor(ctx, s.y_shape(), 3);
    Tensor y(ctx, s.y_shape()), dx(ctx, s.x_shape()), dw(ctx, s.w_shape());
    const double xb = 4.0 * x.numel(), wb = 4.0 * w.numel(), yb = 4.0 * y.numel();
    const std::string dims = "n" + std::to_string(s.n) + " c" + std::to_string(s.c_in) + " " + std::to_string(s.h) +
                             "x" + std::to_string(s.w) + " k" + std::to_string(s.kh) + "s" + std::to_string(s.stride);
    for (int op = 0; op < 3; ++op) {
      // One recording per variant, timed alternately (direct, blocked, direct, ...) so that
      // load on a shared machine hits both alike; each variant reports its median round.
      std::vector<std::unique_ptr<Recording>> recs;
      for (DepthwiseVariant v : variants) {
        set_depthwise_variant(v);
        recs.push_back(std::make_unique<Recording>(ctx));
        if (op == 0) conv2d_forward(*recs.back(), s, x, w, y);
        if (op == 1) conv2d_backward_data(*recs.back(), s, dy, w, dx, false);
        if (op == 2) conv2d_backward_weight(*recs.back(), s, x, dy, dw, false);
        recs.back()->finish();
      }
      set_depthwise_variant(chosen);
      std::vector<std::vector<double>> ms(recs.size());
      for (int r = 0; r < rounds; ++r)
        for (size_t v = 0; v < recs.size(); ++v) ms[v].push_back(time_recording_ms(*recs[v], 1, quick ? 2 : 3));
      static const char* names[] = {"conv2d_dw_fwd ", "conv2d_dw_bwd_data ", "conv2d_dw_bwd_weight "};
      const double bytes[] = {xb + wb + yb, yb + wb + xb, xb + yb + wb};  // minimal traffic: read inputs, write output
      for (size_t v = 0; v < recs.size(); ++v) {
        std::sort(ms[v].begin(), ms[v].end());
        const double t = ms[v][ms[v].size() / 2];
        out.push_back({names[op] + dims, t, s.flops() / t * 1e-6, bytes[op] / t * 1e-6,
                       std::string("dw-") + depthwise_variant_name(variants[v])});
      }
    }
  }
  return out;
}

}  // namespace vkqat::nn

#include "quant/int_bench.h"

#include <random>
#include <string>

#include "nn/ops/conv2d.h"
#include "quant/int_engine.h"

namespace vkqat::quant {
namespace {

constexpr int kRepeats = 5;  // per recording, so submit overhead does not dominate

IntConv bench_layer(const nn::Conv2dShape& s, int bits) {
  IntConv c;
  c.name = "bench";
  c.c_in = s.c_in, c.c_out = s.c_out, c.k = s.kh, c.stride = s.stride, c.pad = s.pad, c.wbits = bits;
  c.levels = (1 << bits) - 1;
  std::mt19937 rng(1);
  std::vector<int> codes(size_t(s.c_out) * s.kh * s.kw * s.c_in);
  for (int& v : codes) v = int(rng() % uint32_t(c.levels + 1));
  c.codes = pack_codes(codes, s.c_out, s.kh * s.kw, s.c_in, bits);
  c.rq.mult.assign(size_t(s.c_out), 1 << 20);
  c.rq.shift.assign(size_t(s.c_out), 30);
  c.rq.bias.assign(size_t(s.c_out), 0);
  return c;
}

}  // namespace

std::vector<nn::BenchRecord> bench_int(Context& ctx, bool quick) {
  std::vector<nn::Conv2dShape> shapes = {{64, 16, 28, 28, 16, 3, 3, 1, 1}};
  if (!quick) {
    shapes.push_back({64, 32, 14, 14, 32, 3, 3, 1, 1});
    shapes.push_back({64, 64, 7, 7, 64, 3, 3, 1, 1});
    shapes.push_back({64, 16, 28, 28, 32, 3, 3, 2, 1});
  }
  std::vector<nn::BenchRecord> out;
  const DeviceInfo& d = ctx.info();
  // Both paths where the dot product can run at all; lavapipe emulates it (not accelerated).
  std::vector<IntConvPath> paths = {IntConvPath::Portable};
  if (d.integer_dot_product_enabled) paths.push_back(IntConvPath::Dot);
  const IntConvPath chosen = int_conv_path(ctx);
  const std::string dot_kind =
      d.integer_dot_4x8_packed_unsigned_accelerated ? "dot, accelerated" : "dot, EMULATED by the driver (not accelerated)";
  for (const nn::Conv2dShape& s : shapes) {
    const std::string size = " n" + std::to_string(s.n) + " c" + std::to_string(s.c_in) + "->" + std::to_string(s.c_out) +
                             " " + std::to_string(s.h) + "x" + std::to_string(s.w) + " k" + std::to_string(s.kh) + " s" +
                             std::to_string(s.stride);
    const double flops = 2.0 * s.n * s.c_out * s.out_h() * s.out_w() * s.c_in * s.kh * s.kw;
    nn::Tensor x(ctx, s.x_shape()), w(ctx, s.w_shape()), y(ctx, s.y_shape());
    x.upload(std::vector<float>(size_t(x.numel()), 0.5f));
    w.upload(std::vector<float>(size_t(w.numel()), 0.25f));
    Recording fp(ctx);
    for (int i = 0; i < kRepeats; ++i) nn::conv2d_forward(fp, s, x, w, y);
    const double fp_ms = nn::time_recording_ms(fp, 1, quick ? 3 : 5) / kRepeats;
    out.push_back({"int-bench conv fp32" + size, fp_ms, flops / (fp_ms * 1e6), 0, "conv2d_forward"});
    for (int bits : {4, 2}) {
      for (IntConvPath path : paths) {
        const bool dot = path == IntConvPath::Dot;
        const IntConvGpu g(ctx, bench_layer(s, bits), path);
        nn::Tensor xi(ctx, {int(x.numel())}, nn::DType::I32), yi(ctx, {int(y.numel())}, nn::DType::I32);
        xi.upload_u32(std::vector<uint32_t>(size_t(x.numel()), 3u));
        Recording rec(ctx);
        for (int i = 0; i < kRepeats; ++i)
          int_conv_forward(rec, g, ref::IntConvMode::Requant, xi, s.n, s.h, s.w, nullptr, yi);
        const double ms = nn::time_recording_ms(rec, 1, quick ? 3 : 5) / kRepeats;
        out.push_back({std::string("int-bench conv ") + (dot ? "int-dot" : "int") + " W" + std::to_string(bits) + "A" +
                           std::to_string(bits) + size,
                       ms, flops / (ms * 1e6), 0,
                       "x" + std::to_string(fp_ms / ms).substr(0, 4) + " vs fp32, " + (dot ? dot_kind : "portable") +
                           (path == chosen ? " [this device's path]" : "")});
      }
    }
  }
  return out;
}

}  // namespace vkqat::quant

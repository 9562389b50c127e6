#include "quant/int_engine.h"

#include <cstdlib>

#include "backend/error.h"
#include "backend/kernel.h"

namespace vkqat::quant {
namespace {

using nn::DType;
using nn::Tensor;

constexpr uint32_t kLocal = 64;
constexpr int kRows = 2, kCols = 4;  // out rows x columns per invocation

struct ConvPush {
  int32_t n, c_in, h, w, c_out, oh, ow, words, levels, wlevels;
};
struct DwPush {
  int32_t n, c, h, w, oh, ow, k, stride, pad, levels, wlevels;
};
struct MaxPoolPush {
  int32_t planes, h, w, oh, ow, k, stride, pad;
};
struct PoolPush {
  int32_t rows, hw, mult, shift, levels;
};
struct FcPush {
  int32_t n, c_in, classes, words, wlevels;
  float scale;
};

Tensor i32_tensor(Context& ctx, int64_t numel) { return Tensor(ctx, {int(numel)}, DType::I32); }

void require(const char* op, const Tensor& t, const char* name, int64_t numel) {
  if (!t.defined() || t.numel() != numel || t.dtype() == DType::F32)
    throw Error(std::string(op) + ": " + name + " must be an integer tensor of " + std::to_string(numel) +
                " elements, got " + (t.defined() ? t.shape_str() : std::string("undefined")));
}

bool dot_accelerated(const DeviceInfo& d) {
  return d.integer_dot_product_enabled && d.integer_dot_4x8_packed_unsigned_accelerated;
}

// The VKQAT_INT_CONV override, or nullptr.
const char* forced_path() {
  const char* e = std::getenv("VKQAT_INT_CONV");
  return e && *e ? e : nullptr;
}

}  // namespace

void require_int_dot(const Context& ctx, const char* who) {
  const DeviceInfo& d = ctx.info();
  if (!d.integer_dot_product_enabled)
    throw Error(std::string(who) + ": the integer dot-product path needs shaderIntegerDotProduct, which " + d.name +
                (d.integer_dot_product ? " supports but the context did not enable" : " does not support") +
                "; use VKQAT_INT_CONV=portable");
}

IntConvPath int_conv_path(const Context& ctx) {
  if (const char* e = forced_path()) {
    const std::string v = e;
    if (v == "portable") return IntConvPath::Portable;
    if (v != "dot") throw Error("VKQAT_INT_CONV must be portable or dot, got '" + v + "'");
    require_int_dot(ctx, "VKQAT_INT_CONV=dot");
    return IntConvPath::Dot;
  }
  return dot_accelerated(ctx.info()) ? IntConvPath::Dot : IntConvPath::Portable;
}

std::string int_conv_variant(const Context& ctx) {
  const DeviceInfo& d = ctx.info();
  const IntConvPath path = int_conv_path(ctx);
  if (forced_path())
    return path == IntConvPath::Portable ? "portable (forced by VKQAT_INT_CONV)"
           : dot_accelerated(d) ? "dot (forced by VKQAT_INT_CONV; accelerated)"
                                : "dot (forced by VKQAT_INT_CONV; emulated, not accelerated, on this device)";
  if (path == IntConvPath::Dot) return "dot (dotPacked4x8 accelerated)";
  if (!d.integer_dot_product) return "portable (no integer dot product)";
  if (!d.integer_dot_product_enabled) return "portable (integer dot product not enabled)";
  return "portable (dotPacked4x8 not accelerated)";
}

IntConvGpu::IntConvGpu(Context& ctx, const IntConv& l) : IntConvGpu(ctx, l, int_conv_path(ctx)) {}

IntConvGpu::IntConvGpu(Context& ctx, const IntConv& l, IntConvPath conv_path)
    : layer(l), path(l.groups > 1 ? IntConvPath::Portable : conv_path) {  // depthwise: its own portable shader
  if (l.groups > 1 && !l.depthwise())
    throw Error("IntConvGpu " + l.name + ": groups " + std::to_string(l.groups) + " is neither 1 nor depthwise");
  if (path == IntConvPath::Dot) {
    require_int_dot(ctx, ("IntConvGpu " + l.name).c_str());
    // int_conv_dot.comp reads 8-bit containers, 4 in channels per word (codes < 2^wbits <= 256).
    const int taps = l.k * l.k;
    const std::vector<uint32_t> bytes =
        pack_codes(unpack_codes(l.codes, l.c_out, taps, l.c_in, l.wbits), l.c_out, taps, l.c_in, 8);
    codes = Tensor(ctx, {int(bytes.size())}, DType::U32);
    codes.upload_u32(bytes);
  } else {
    codes = Tensor(ctx, {int(l.codes.size())}, DType::U32);
    codes.upload_u32(l.codes);
  }
  if (l.rq.mult.empty()) return;
  std::vector<uint32_t> p(size_t(l.c_out) * 8, 0u);
  for (int o = 0; o < l.c_out; ++o) {
    const uint64_t bias = uint64_t(l.rq.bias[o]);
    p[o * 8 + 0] = uint32_t(l.rq.mult[o]);
    p[o * 8 + 1] = l.rq.mult2.empty() ? 0u : uint32_t(l.rq.mult2[o]);
    p[o * 8 + 2] = uint32_t(l.rq.shift[o]);
    p[o * 8 + 4] = uint32_t(bias & 0xffffffffu);
    p[o * 8 + 5] = uint32_t(bias >> 32);
  }
  rq = Tensor(ctx, {int(p.size())}, DType::I32);
  rq.upload_u32(p);
}

void int_conv_forward(Recording& rec, const IntConvGpu& g, ref::IntConvMode mode, const Tensor& x, int n, int h, int w,
                      const Tensor* res, Tensor& y) {
  const IntConv& c = g.layer;
  const std::string op = "int_conv_forward " + c.name;
  const int oh = (h + 2 * c.pad - c.k) / c.stride + 1, ow = (w + 2 * c.pad - c.k) / c.stride + 1;
  if (n < 1 || oh < 1 || ow < 1) throw Error(op + ": empty output for input " + std::to_string(h) + "x" + std::to_string(w));
  require(op.c_str(), x, "x", int64_t(n) * c.c_in * h * w);
  require(op.c_str(), y, "y", int64_t(n) * c.c_out * oh * ow);
  const bool raw = mode == ref::IntConvMode::Raw;
  if (raw != (c.levels == 0) || (!raw && !g.rq.defined()))
    throw Error(op + ": raw accumulators iff the layer has no requantization");
  if (mode == ref::IntConvMode::Residual) {
    if (!res) throw Error(op + ": residual mode needs the shortcut tensor");
    require(op.c_str(), *res, "res", y.numel());
  }
  const uint32_t spec_mode = mode == ref::IntConvMode::Requant ? 0 : mode == ref::IntConvMode::Stem ? 1
                             : mode == ref::IntConvMode::Residual ? 2 : 3;
  const BufferView rqv = raw ? g.codes.view() : g.rq.view();
  const BufferView resv = res ? res->view() : x.view();
  if (c.depthwise()) {
    require(op.c_str(), g.codes, "codes", int64_t(c.c_out) * c.k * c.k);
    const uint32_t local = pick_workgroup_size(rec.context().info(), 64);
    const Kernel& k =
        rec.context().kernel("int_conv_dw", {local, 1, 1},
                             {uint32_t(int_container_bits(c.wbits)), spec_mode, uint32_t(c.x_offset)});
    DwPush push{n, c.c_in, h, w, oh, ow, c.k, c.stride, c.pad, c.levels, c.wlevels()};
    rec.dispatch_1d(k, {x.view(), g.codes.view(), rqv, resv, y.view()}, push, uint64_t(y.numel()), "int_conv_dw");
    return;
  }
  const int mb = c.c_out >= 8 ? 8 : 4;
  const bool dot = g.path == IntConvPath::Dot;
  std::vector<uint32_t> spec = {uint32_t(c.k), uint32_t(c.k), uint32_t(c.stride), uint32_t(c.pad)};
  if (!dot) spec.push_back(uint32_t(int_container_bits(c.wbits)));
  spec.insert(spec.end(), {spec_mode, uint32_t(mb), uint32_t(kRows), uint32_t(kCols), uint32_t(c.x_offset)});
  const Kernel& k = rec.context().kernel(dot ? "int_conv_dot" : "int_conv", {kLocal, 1, 1}, spec);
  const int words = packed_words_per_tap(c.c_in, dot ? 8 : c.wbits);
  require(op.c_str(), g.codes, "codes", int64_t(c.c_out) * c.k * c.k * words);
  ConvPush push{n, c.c_in, h, w, c.c_out, oh, ow, words, c.levels, c.wlevels()};
  const uint64_t blocks = uint64_t(n) * ((oh + kRows - 1) / kRows) * ((ow + kCols - 1) / kCols);
  rec.dispatch(k, {x.view(), g.codes.view(), rqv, resv, y.view()}, push,
               Groups{uint32_t((blocks + kLocal - 1) / kLocal), uint32_t((c.c_out + mb - 1) / mb), 1},
               dot ? "int_conv_dot" : "int_conv");
}

void int_pool_forward(Recording& rec, const Tensor& x, int rows, int hw, int32_t mult, int shift, int levels, Tensor& y) {
  require("int_pool_forward", x, "x", int64_t(rows) * hw);
  require("int_pool_forward", y, "y", rows);
  const Kernel& k = rec.context().kernel("int_pool", {kLocal, 1, 1});
  rec.dispatch_1d(k, {x.view(), y.view()}, PoolPush{rows, hw, mult, shift, levels}, uint64_t(rows), "int_pool");
}

void int_maxpool_forward(Recording& rec, const Tensor& x, int planes, int h, int w, int kernel, int stride, int pad,
                         Tensor& y) {
  const int oh = (h + 2 * pad - kernel) / stride + 1, ow = (w + 2 * pad - kernel) / stride + 1;
  if (planes < 1 || oh < 1 || ow < 1 || kernel < 1 || stride < 1 || pad < 0 || 2 * pad > kernel)
    throw Error("int_maxpool_forward: bad geometry (kernel " + std::to_string(kernel) + ", stride " +
                std::to_string(stride) + ", padding " + std::to_string(pad) + " on " + std::to_string(h) + "x" +
                std::to_string(w) + ")");
  require("int_maxpool_forward", x, "x", int64_t(planes) * h * w);
  require("int_maxpool_forward", y, "y", int64_t(planes) * oh * ow);
  const Kernel& k = rec.context().kernel("int_maxpool", {pick_workgroup_size(rec.context().info(), 64), 1, 1});
  rec.dispatch_1d(k, {x.view(), y.view()}, MaxPoolPush{planes, h, w, oh, ow, kernel, stride, pad}, uint64_t(y.numel()),
                  "int_maxpool");
}

IntEngine::IntEngine(Context& ctx, const IntModel& m, int batch, std::optional<IntConvPath> path)
    : ctx_(ctx), model_(m), batch_(batch), rec_(ctx) {
  if (batch < 1) throw Error("IntEngine: batch must be >= 1");
  const IntConvPath conv_path = path ? *path : int_conv_path(ctx);
  const nn::ModelConfig& mc = m.model;
  image_ = i32_tensor(ctx, int64_t(batch) * mc.in_channels * mc.height * mc.width_px);
  for (const IntNode& nd : m.nodes) {
    auto l = std::make_unique<Layer>();
    l->node = &nd;
    if (nd.op == IntOp::Conv) l->conv = IntConvGpu(ctx, nd.conv, conv_path);
    if (nd.op == IntOp::Fc) {
      l->fc_codes = Tensor(ctx, {int(nd.conv.codes.size())}, DType::U32);
      l->fc_codes.upload_u32(nd.conv.codes);
      l->fc_bias = Tensor(ctx, {nd.conv.c_out});
      l->fc_bias.upload(nd.bias);
      l->out = Tensor(ctx, {batch, nd.conv.c_out});
    } else {
      l->out = i32_tensor(ctx, int64_t(batch) * nd.c * nd.h * nd.w);
    }
    layers_.push_back(std::move(l));
  }
  auto input = [&](const IntNode& nd, size_t k) -> Tensor& {
    const int j = nd.input_index.at(k);
    return j < 0 ? image_ : layers_[size_t(j)]->out;
  };
  for (auto& l : layers_) {
    const IntNode& nd = *l->node;
    const int j = nd.input_index.at(0);
    const int c = j < 0 ? mc.in_channels : m.nodes[size_t(j)].c;
    const int h = j < 0 ? mc.height : m.nodes[size_t(j)].h, w = j < 0 ? mc.width_px : m.nodes[size_t(j)].w;
    switch (nd.op) {
      case IntOp::Conv:
        int_conv_forward(rec_, l->conv, nd.mode, input(nd, 0), batch, h, w,
                         nd.mode == IntConvMode::Residual ? &input(nd, 1) : nullptr, l->out);
        break;
      case IntOp::MaxPool:
        int_maxpool_forward(rec_, input(nd, 0), batch * c, h, w, nd.kernel, nd.stride, nd.pad, l->out);
        break;
      case IntOp::AvgPool:
        int_pool_forward(rec_, input(nd, 0), batch * c, h * w, nd.mult, nd.shift, nd.levels, l->out);
        break;
      case IntOp::Fc: {
        const IntConv& fc = nd.conv;
        const Kernel& k = ctx.kernel("int_fc", {kLocal, 1, 1}, {uint32_t(int_container_bits(fc.wbits))});
        FcPush fp{batch, fc.c_in, fc.c_out, packed_words_per_tap(fc.c_in, fc.wbits), fc.wlevels(), nd.logit_scale};
        rec_.dispatch_1d(k, {input(nd, 0).view(), l->fc_codes.view(), l->fc_bias.view(), l->out.view()}, fp,
                         uint64_t(batch) * fc.c_out, "int_fc");
        break;
      }
    }
  }
  rec_.finish();
}

std::vector<float> IntEngine::run(const std::vector<uint8_t>& pixels, int count) {
  const nn::ModelConfig& mc = model_.model;
  const size_t image = size_t(mc.in_channels) * mc.height * mc.width_px;
  if (count < 1 || count > batch_ || pixels.size() != size_t(count) * image)
    throw Error("IntEngine::run: " + std::to_string(pixels.size()) + " bytes for " + std::to_string(count) +
                " images of " + std::to_string(image) + " bytes (batch " + std::to_string(batch_) + ")");
  std::vector<uint32_t> px(size_t(batch_) * image, 0u);
  for (size_t i = 0; i < pixels.size(); ++i) px[i] = pixels[i];
  image_.upload_u32(px);
  rec_.run();
  std::vector<float> logits = layers_.back()->out.download();
  logits.resize(size_t(count) * mc.classes);
  return logits;
}

std::vector<std::pair<std::string, std::vector<int32_t>>> IntEngine::layer_outputs(int count) const {
  std::vector<std::pair<std::string, std::vector<int32_t>>> out;
  auto take = [&](const std::string& name, const Tensor& t) {
    const std::vector<uint32_t> all = t.download_u32();
    const size_t per_image = all.size() / size_t(batch_);
    out.push_back({name, std::vector<int32_t>(all.begin(), all.begin() + per_image * count)});
  };
  for (const auto& l : layers_)
    if (l->node->op != IntOp::Fc) take(l->node->name, l->out);
  return out;
}

}  // namespace vkqat::quant

#pragma once
// GPU inference of the integer model (int_model.h), walking its layer list: every layer is
// one dispatch: convs of shaders/int_conv.comp (packed weight codes, int32 accumulation,
// 64-bit requantization fused into the epilogue, residual adds in the integer domain) or
// int_conv_dw.comp (depthwise), int_maxpool (max pool on codes), int_pool (the classifier's
// input codes) and int_fc (float logits). Activations are int32 codes, NCHW (signed ones
// offset: a conv reading them gets the offset as a specialization constant, IntConv::x_offset).
// The whole network is recorded once for a fixed batch and replayed.
//
// Kernel variant (chosen per device, like the conv2d variants): the portable path
// (int_conv.comp: unpack + int32 multiply-add, register-blocked) runs on every device; the
// dot path (int_conv_dot.comp: OpUDot on 4 channels per word, weights repacked to 8-bit
// codes when the layer is uploaded) is chosen where the backend enabled
// shaderIntegerDotProduct AND the driver reports the unsigned packed 4x8 dot product
// accelerated. VKQAT_INT_CONV=portable|dot forces a path (dot: Error where the feature is
// not enabled), so tests run the dot shader on lavapipe, which emulates it.
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "backend/recording.h"
#include "nn/tensor.h"
#include "quant/int_model.h"
#include "quant/int_reference.h"

namespace vkqat::quant {

enum class IntConvPath { Portable, Dot };

// The path this device gets: VKQAT_INT_CONV if set (Error for another value, or for dot
// where the feature is not enabled), else dot iff enabled and accelerated.
IntConvPath int_conv_path(const Context& ctx);
// int_conv_path(ctx) and why, e.g. "portable (dotPacked4x8 not accelerated)",
// "dot (forced by VKQAT_INT_CONV; emulated, not accelerated, on this device)".
std::string int_conv_variant(const Context& ctx);
// Error unless the dot path can run on this device (the feature is enabled).
void require_int_dot(const Context& ctx, const char* who);

// A conv layer's device-side weights: codes packed for `path` (as in the model file for
// Portable, 8-bit containers 4 per word for Dot) and requantization parameters
// (8 int32 per out channel: mult, mult2, shift, 0, bias low, bias high, 0, 0).
struct IntConvGpu {
  IntConvGpu() = default;
  IntConvGpu(Context& ctx, const IntConv& layer);  // path int_conv_path(ctx)
  IntConvGpu(Context& ctx, const IntConv& layer, IntConvPath path);
  IntConv layer;  // geometry and bits (codes kept for the CPU side)
  IntConvPath path = IntConvPath::Portable;
  nn::Tensor codes, rq;
};

// y = the layer applied to x [n, c_in, h, w] (I32 tensors; flat sizes are checked). res:
// the shortcut (same size as y) for IntConvMode::Residual.
void int_conv_forward(Recording& rec, const IntConvGpu& c, ref::IntConvMode mode, const nn::Tensor& x, int n, int h,
                      int w, const nn::Tensor* res, nn::Tensor& y);
// y [planes, oh, ow] = max of x [planes, h, w] codes over each window (ref::int_maxpool).
void int_maxpool_forward(Recording& rec, const nn::Tensor& x, int planes, int h, int w, int kernel, int stride, int pad,
                         nn::Tensor& y);
// y [rows] = requant(sum of x over hw) (x: [rows, hw]).
void int_pool_forward(Recording& rec, const nn::Tensor& x, int rows, int hw, int32_t mult, int shift, int levels,
                      nn::Tensor& y);

class IntEngine {
 public:
  // `m` must outlive the engine. Every conv runs on `path`, by default int_conv_path(ctx).
  IntEngine(Context& ctx, const IntModel& m, int batch, std::optional<IntConvPath> path = std::nullopt);
  int batch() const { return batch_; }
  // pixels: `count` <= batch images of C x H x W bytes; returns logits [count, classes].
  std::vector<float> run(const std::vector<uint8_t>& pixels, int count);
  // Every layer's output but the fc's, of the last run (names and order of ref::IntTrace),
  // first `count` images.
  std::vector<std::pair<std::string, std::vector<int32_t>>> layer_outputs(int count) const;
  Recording& recording() { return rec_; }

 private:
  struct Layer {
    const IntNode* node;
    IntConvGpu conv;             // Conv
    nn::Tensor fc_codes, fc_bias;  // Fc
    nn::Tensor out;              // I32 codes / accumulators; the fc's: F32 logits
  };
  Context& ctx_;
  const IntModel& model_;
  int batch_;
  nn::Tensor image_;
  std::vector<std::unique_ptr<Layer>> layers_;
  Recording rec_;
};

}  // namespace vkqat::quant

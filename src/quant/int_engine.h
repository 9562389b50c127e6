#pragma once
// GPU inference of the integer model (int_model.h): every layer is one dispatch of
// shaders/int_conv.comp (packed weight codes, int32 accumulation, 64-bit requantization
// fused into the epilogue, residual adds in the integer domain), then int_pool (fc.act
// codes) and int_fc (float logits). Activations are int32 codes, NCHW. The whole network
// is recorded once for a fixed batch and replayed.
//
// Kernel variant: the portable path (unpack + int32 multiply-add, register-blocked) runs on
// every device. dotPacked4x8EXT would need the shaderIntegerDotProduct feature enabled at
// device creation, which the backend does not do; int_conv_variant() says which path a
// device gets ("portable", or the reason the accelerated one is unavailable).
#include <string>
#include <utility>
#include <vector>

#include "backend/recording.h"
#include "nn/tensor.h"
#include "quant/int_model.h"
#include "quant/int_reference.h"

namespace vkqat::quant {

std::string int_conv_variant(const Context& ctx);

// A conv layer's device-side weights: packed codes and requantization parameters
// (8 int32 per out channel: mult, mult2, shift, 0, bias low, bias high, 0, 0).
struct IntConvGpu {
  IntConvGpu() = default;
  IntConvGpu(Context& ctx, const IntConv& layer);
  IntConv layer;  // geometry and bits (codes kept for the CPU side)
  nn::Tensor codes, rq;
};

// y = the layer applied to x [n, c_in, h, w] (I32 tensors; flat sizes are checked). res:
// the shortcut (same size as y) for IntConvMode::Residual.
void int_conv_forward(Recording& rec, const IntConvGpu& c, ref::IntConvMode mode, const nn::Tensor& x, int n, int h,
                      int w, const nn::Tensor* res, nn::Tensor& y);
// y [rows] = requant(sum of x over hw) (x: [rows, hw]).
void int_pool_forward(Recording& rec, const nn::Tensor& x, int rows, int hw, int32_t mult, int shift, int levels,
                      nn::Tensor& y);

class IntEngine {
 public:
  // `m` must outlive the engine.
  IntEngine(Context& ctx, const IntModel& m, int batch);
  int batch() const { return batch_; }
  // pixels: `count` <= batch images of C x H x W bytes; returns logits [count, classes].
  std::vector<float> run(const std::vector<uint8_t>& pixels, int count);
  // Every layer's output of the last run (names and order of ref::IntTrace), first `count` images.
  std::vector<std::pair<std::string, std::vector<int32_t>>> layer_outputs(int count) const;
  Recording& recording() { return rec_; }

 private:
  struct Layer {
    IntConvGpu conv;
    ref::IntConvMode mode;
    int h, w;  // input size
    nn::Tensor* in;
    nn::Tensor* res;
    nn::Tensor out;
  };
  Context& ctx_;
  const IntModel& model_;
  int batch_;
  nn::Tensor image_, pooled_, fc_codes_, fc_bias_, logits_;
  std::vector<std::unique_ptr<Layer>> layers_;
  Recording rec_;
};

}  // namespace vkqat::quant

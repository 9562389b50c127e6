#pragma once
// CPU reference of the integer pipeline (the arithmetic of int_model.h, in plain loops with
// int64), walking the model's layer list: what the GPU engine (int_engine.h) must reproduce
// bit for bit, layer by layer.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "quant/int_model.h"

namespace vkqat::quant::ref {

using IntConvMode = quant::IntConvMode;

// clamp((v + 2^(shift-1)) >> shift, 0, levels)
int32_t int_requant(int64_t v, int shift, int levels);

// x [n, c_in, h, w] (codes, or pixels for the stem) -> [n, c_out, oh, ow]: codes, or raw
// accumulators for Raw. residual: same shape as the output (Residual only). Grouped convs
// (depthwise) sum over their group's input channels. Offset input codes (c.x_offset) count
// as a - x_offset at the taps inside the image.
std::vector<int32_t> int_conv(const IntConv& c, IntConvMode mode, const std::vector<int32_t>& x, int n, int h, int w,
                              const std::vector<int32_t>* residual = nullptr);
// x [n, c, h, w] codes -> max over each window (padding never wins; codes are >= 0).
std::vector<int32_t> int_maxpool(const std::vector<int32_t>& x, int n, int c, int h, int w, int kernel, int stride,
                                 int pad);
// x [n, c, hw] -> codes [n, c] of the classifier's input quantizer.
std::vector<int32_t> int_pool(const std::vector<int32_t>& x, int n, int c, int hw, int32_t mult, int shift, int levels);
// x [n, c_in] codes -> logits [n, classes].
std::vector<float> int_fc(const std::vector<uint32_t>& codes, int wbits, int c_in, int classes, float logit_scale,
                          const std::vector<float>& bias, const std::vector<int32_t>& x, int n);

// Every layer's output but the fc's, in the model's order and with its names, and the logits.
struct IntTrace {
  std::vector<std::pair<std::string, std::vector<int32_t>>> layers;
  std::vector<float> logits;
};
// pixels: n images of C x H x W bytes.
IntTrace int_forward(const IntModel& m, const std::vector<uint8_t>& pixels, int n);

}  // namespace vkqat::quant::ref

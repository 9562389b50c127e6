#pragma once
// Uniform quantization grids through 0, for exact evaluation of quantized convolutions.
//
// A quantizer whose outputs are integers times one step (DoReFa weights: odd integers / n;
// PACT activations: integers * alpha / n) describes that step as a Grid. A convolution of
// two such tensors is a sum of integer products scaled by step_x * step_w. Computed on the
// values, the float sum rounds at every term; computed on the integer indices it is exact
// (every partial sum is an integer below 2^24 for c_in k^2 n_x n_w < 2^24: e.g. 4-bit codes,
// 64 channels, 3x3), and one multiplication turns it into the value. Evaluation does the
// latter, so the fake-quant model computes what the integer model (quant/int_model.h)
// computes, up to the float rounding of the BN and requantization arithmetic after the sum.
#include <vector>

#include "backend/recording.h"
#include "nn/tensor.h"

namespace vkqat::nn {

// step = mul * (scale ? scale[0] : 1); scale is a device tensor whose element 0 is read (a
// learned clip level, a SAT factor) or null.
struct Grid {
  const Tensor* scale = nullptr;
  float mul = 1;
};

// y = roundEven(x / step) (0 where step is 0). x and y same shape.
void grid_levels(Recording& rec, const Tensor& x, const Grid& g, Tensor& y);
// y *= step_a * step_b, in place.
void grid_rescale(Recording& rec, Tensor& y, const Grid& a, const Grid& b);

namespace ref {
// The same float operations in the same order as the shaders.
std::vector<float> grid_levels(const std::vector<float>& x, float scale, float mul);
std::vector<float> grid_rescale(const std::vector<float>& y, float step_a_scale, float a_mul, float step_b_scale,
                                float b_mul);
}  // namespace ref

}  // namespace vkqat::nn

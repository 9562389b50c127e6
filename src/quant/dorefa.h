#pragma once
// DoReFa quantizers (METHODS.md §1 and §2 "DoReFa activations"); k = bits, n = 2^k - 1,
// round = half away from zero.
//
// Weights, per tensor (the default weight quantizer):
//   k >= 2: t = tanh(w); u = t / (2 max|t|) + 1/2; wq = 2 round(n u) / n - 1      (in [-1, 1])
//           backward dw = g (1 - t^2) / max|t|
//   k = 1:  wq = sign(w) mean|w|;  backward dw = g (STE)
//   The statistic (max|t| resp. mean|w|) is detached: a constant in backward. It is
//   computed on the device into `stat` (1 element) by the forward and read by the backward:
//   stat = max|w| for k >= 2 (max|tanh w| = tanh(max|w|), tanh being odd and increasing;
//   the shaders apply tanh), mean|w| for k = 1. An all-zero w gives 1/max|t| := 0.
//   As computed: u n = (t (0.5 / m) + 0.5) n, wq = level * (2/n) - 1 with m = tanh(stat).
// Activations (baseline): y = round(n clamp(x, 0, 1)) / n  (as level * (1/n));
//   backward dx = g [0 <= x <= 1].
// No learned parameters. Backward ops take `accumulate` (false: overwrite dw/dx, true: add).
#include <vector>

#include "quant/common.h"

namespace vkqat::quant {

// wq = DoReFa(w); writes the statistic into stat[0] first (nn::reduce_max_abs for k >= 2,
// sum|w| / numel for k = 1). scratch: make_quant_scratch(ctx, w.shape()).
void dorefa_weight_forward(Recording& rec, const Tensor& w, Tensor& wq, Tensor& stat, Tensor& scratch, int bits);
// dw (+)= dwq * d wq / d w, using the stat the forward wrote.
void dorefa_weight_backward(Recording& rec, const Tensor& w, const Tensor& stat, const Tensor& dwq, Tensor& dw,
                            bool accumulate, int bits);

void dorefa_act_forward(Recording& rec, const Tensor& x, Tensor& y, int bits);
void dorefa_act_backward(Recording& rec, const Tensor& x, const Tensor& dy, Tensor& dx, bool accumulate);

namespace ref {
// The statistic the forward writes to stat[0] (max|w| or mean|w|, mean summed in double).
float dorefa_weight_stat(const std::vector<float>& w, int bits);
// Float computation identical to the shader, given the device's stat.
Quantized dorefa_weight_forward(const std::vector<float>& w, float stat, int bits);
// Closed form in double: g (1 - tanh(w)^2) / tanh(stat) (k >= 2), g (k = 1).
std::vector<double> dorefa_weight_backward(const std::vector<float>& w, float stat, const std::vector<float>& g,
                                           int bits);
Quantized dorefa_act_forward(const std::vector<float>& x, int bits);
std::vector<float> dorefa_act_backward(const std::vector<float>& x, const std::vector<float>& g);
}  // namespace ref

}  // namespace vkqat::quant

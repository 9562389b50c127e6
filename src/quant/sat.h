#pragma once
// SAT, scale-adjusted training (METHODS.md §3): rescale a layer's effective weights so that
// n Var[W*] = 1.
//   forward   W* = Wq / sqrt(n Var[Wq])     Var over the whole tensor, population variance
//   backward  dWq = dW* / sqrt(n Var[Wq])    (Var is detached: a constant in backward)
//   n = number of classes (out features) for the last FC: sat_fc_n(); for conv layers
//   (`rescale_conv`) n = fan_out = out_channels * kh * kw: sat_conv_fan_out(). Same op.
//   Full precision ("clamp-only") is the same op applied to W instead of Wq.
// State: `stats`, a 2-element device tensor [factor, Var[Wq]] written by the forward
// (nn::reduce_var into stats[1], then the scale pass stores factor = 1/sqrt(n Var) in
// stats[0]; a constant tensor, Var = 0, gets factor 1). The backward reads stats[0]; export
// can fold stats[0] into the weights (identical logits). No learned parameters.
#include <vector>

#include "quant/common.h"

namespace vkqat::quant {

// n of the last FC [out, in]: out. Of a conv OIHW weight: O * kh * kw.
int64_t sat_fc_n(const std::vector<int>& weight_shape);
int64_t sat_conv_fan_out(const std::vector<int>& weight_shape);

// stats: 2 elements; scratch: make_quant_scratch(ctx, wq.shape()).
void sat_forward(Recording& rec, const Tensor& wq, Tensor& w_star, Tensor& stats, Tensor& scratch, int64_t n);
// dwq (+)= dw_star * stats[0].
void sat_backward(Recording& rec, const Tensor& stats, const Tensor& dw_star, Tensor& dwq, bool accumulate);

namespace ref {
struct SatScaled {
  std::vector<double> w_star;
  double factor = 1, var = 0;
};
SatScaled sat_forward(const std::vector<float>& wq, int64_t n);
}  // namespace ref

}  // namespace vkqat::quant

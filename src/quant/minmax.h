#pragma once
// Min-max uniform quantizers (METHODS.md §2 "Min-max uniform"), the simplest baseline; STE
// backward; round = half away from zero; n = 2^k - 1. Per tensor or per channel (dim 0 of
// weights, dim 1 of NCHW activations).
//
// Weights, symmetric ("narrow range", zero exactly representable), k >= 2:
//   Qp = 2^(k-1) - 1;  m = max|w| of the tensor / channel (this step's weights, no EMA)
//   s = max(m, kMinScale) / Qp                (as computed: max(m, kMinScale) * (1/Qp))
//   wq = round(clamp(w / s, -Qp, Qp)) s       (as computed: w * (1/s))
//   backward dw = g (every w lies inside [-m, m])
//   1 bit has Qp = 0, no symmetric grid: throws Error.
// Activations, asymmetric with a zero point and a running range [2, C] (row 0 min, row 1
// max; make_minmax_range() starts it "empty" as (+inf, -inf)):
//   training forward first observes the batch: bmin/bmax of x per tensor / channel; the first
//   observation is copied, later ones move the range by EMA: r += 0.01 (b - r); then it
//   quantizes with the updated range (PyTorch's FakeQuantize order). Eval uses the range
//   as it is.
//   lo = min(rmin, 0), hi = max(rmax, 0)              (zero always representable)
//   s  = max((hi - lo) / n, kMinScale)                (as computed: (hi - lo) * (1/n))
//   zp = clamp(round(-lo / s), 0, n)
//   qi = round(x / s) + zp;  y = (clamp(qi, 0, n) - zp) s
//   backward dx = g [0 <= qi <= n]   (PyTorch's fake-quantize mask)
// No learned parameters; the running range is state (a checkpoint should save it).
#include <vector>

#include "quant/common.h"

namespace vkqat::quant {

constexpr float kMinMaxMomentum = 0.01f;

struct MinMaxConfig {
  int bits = 8;
  bool per_channel = false;
};

// Number of channels (scales) for a tensor of `shape`.
int64_t minmax_channel_count(QuantTarget target, const MinMaxConfig& cfg, const std::vector<int>& shape);

// stat ([1] or [out channels]) receives max|w|; scratch: make_quant_scratch(ctx, w.shape(), quant_scope(...)).
void minmax_weight_forward(Recording& rec, const Tensor& w, Tensor& wq, Tensor& stat, Tensor& scratch,
                           const MinMaxConfig& cfg);
// dw (+)= dwq.
void minmax_weight_backward(Recording& rec, const Tensor& dwq, Tensor& dw, bool accumulate);

// A running range [2, channels] set to (+inf, -inf): "nothing observed yet".
Tensor make_minmax_range(Context& ctx, int64_t channels);
// training: update `range` from x (EMA, momentum) first. scratch is only used when training.
void minmax_act_forward(Recording& rec, const Tensor& x, Tensor& y, Tensor& range, Tensor& scratch,
                        const MinMaxConfig& cfg, bool training, float momentum = kMinMaxMomentum);
// Only the range update of the training forward.
void minmax_observe(Recording& rec, const Tensor& x, Tensor& range, Tensor& scratch, const MinMaxConfig& cfg,
                    float momentum = kMinMaxMomentum);
void minmax_act_backward(Recording& rec, const Tensor& x, const Tensor& range, const Tensor& dy, Tensor& dx,
                         bool accumulate, const MinMaxConfig& cfg);

namespace ref {
std::vector<float> minmax_weight_stat(const std::vector<float>& w, const std::vector<int>& shape,
                                      const MinMaxConfig& cfg);
Quantized minmax_weight_forward(const std::vector<float>& w, const std::vector<int>& shape,
                                const std::vector<float>& stat, const MinMaxConfig& cfg);
// Updates range ([2 * C]: mins then maxes) in place, as the device does (float EMA).
void minmax_observe(const std::vector<float>& x, const std::vector<int>& shape, std::vector<float>& range,
                    const MinMaxConfig& cfg, float momentum = kMinMaxMomentum);
// r is x / s before the zero point is added.
Quantized minmax_act_forward(const std::vector<float>& x, const std::vector<int>& shape,
                             const std::vector<float>& range, const MinMaxConfig& cfg);
std::vector<float> minmax_act_backward(const std::vector<float>& x, const std::vector<int>& shape,
                                       const std::vector<float>& range, const std::vector<float>& g,
                                       const MinMaxConfig& cfg);
}  // namespace ref

}  // namespace vkqat::quant

#pragma once
// LSQ, learned step size quantization (METHODS.md §2), for weights and activations, per
// tensor or per channel; round = half away from zero.
//   weights (signed):        Qn = 2^(k-1), Qp = 2^(k-1) - 1   (k >= 2: 1 bit leaves Qp = 0)
//   activations (unsigned):  Qn = 0,       Qp = 2^k - 1
//   activations, symmetric:  as weights (a linear bottleneck, whose input can be negative)
//   forward   vq = round(clamp(v/s, -Qn, Qp)) s          (as computed: r = v * (1/s))
//   backward  dv = g [-Qn <= v/s <= Qp]                  (STE)
//             ds = gs sum(g (round(v/s) - v/s inside; -Qn below; Qp above))
//             gs = 1 / sqrt(N Qp), N = elements per step: per tensor all elements, per
//             channel the elements of that channel; for activations the batch dimension
//             is excluded (N = C H W per tensor, H W per channel).
//   init      s = 2 mean|v| / sqrt(Qp) (activations: on the first batch), on the device.
// Channels: dim 0 of OIHW / [out, in] weights, dim 1 of NCHW activations.
// Learned parameter: the step size tensor s ([1] or [channels]), read from its buffer on
// every replay and used as max(s, kMinScale); its gradient is written to (accumulate: added
// into) `ds` of the same shape by a deterministic two-pass reduction. The trainer hooks ds
// into SGD without weight decay. The backward is one pass (dv + per-invocation partials of
// ds) plus a small merge pass.
#include <vector>

#include "quant/common.h"

namespace vkqat::quant {

struct LsqConfig {
  int bits = 4;
  QuantTarget target = QuantTarget::Activation;
  bool per_channel = false;
  bool symmetric = false;  // activations: the signed range, as weights (a linear bottleneck's input)
};

struct LsqRange {
  float qn = 0, qp = 0;
};
// Throws Error for bits outside 1..8 and for signed 1-bit (Qp = 0).
LsqRange lsq_range(const LsqConfig& cfg);
// Number of step sizes for a tensor of `shape` (1, or its channel count).
int64_t lsq_step_count(const LsqConfig& cfg, const std::vector<int>& shape);
// Elements per step N and gs = 1 / sqrt(N Qp).
int64_t lsq_elements_per_step(const LsqConfig& cfg, const std::vector<int>& shape);
float lsq_grad_scale(const LsqConfig& cfg, const std::vector<int>& shape);

void lsq_forward(Recording& rec, const Tensor& v, const Tensor& s, Tensor& vq, const LsqConfig& cfg);
// dv (+)= ..., ds (+)= ... . scratch: make_quant_scratch(ctx, v.shape(), quant_scope(...)).
void lsq_backward(Recording& rec, const Tensor& v, const Tensor& s, const Tensor& dvq, Tensor& dv, bool accumulate_dv,
                  Tensor& ds, bool accumulate_ds, Tensor& scratch, const LsqConfig& cfg);
// s = max(2 mean|v| / sqrt(Qp), kMinScale) per step (the floor keeps a dead channel finite).
// Record it once, before the first forward (for activations: on the first batch).
void lsq_init_step(Recording& rec, const Tensor& v, Tensor& s, Tensor& scratch, const LsqConfig& cfg);

namespace ref {
Quantized lsq_forward(const std::vector<float>& v, const std::vector<int>& shape, const std::vector<float>& s,
                      const LsqConfig& cfg);
struct LsqGrads {
  std::vector<float> dv;
  std::vector<double> ds;  // includes gs; summed in double
};
LsqGrads lsq_backward(const std::vector<float>& v, const std::vector<int>& shape, const std::vector<float>& s,
                      const std::vector<float>& g, const LsqConfig& cfg);
std::vector<double> lsq_init_step(const std::vector<float>& v, const std::vector<int>& shape, const LsqConfig& cfg);
}  // namespace ref

}  // namespace vkqat::quant

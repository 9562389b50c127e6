#pragma once
// BatchNorm2d (PyTorch semantics) on NCHW activations, with an optional fused ReLU, and its
// CPU twin (namespace ref). Per-channel tensors (gamma, beta, running and saved stats, and
// their gradients) are F32 [C].
#include <cstdint>
#include <vector>

#include "backend/recording.h"
#include "nn/tensor.h"

namespace vkqat::nn {

// Training forward: normalizes with the batch mean and biased variance, saves mean and
// 1/sqrt(var + eps) for backward, and updates running_mean / running_var in place like
// torch.nn.BatchNorm2d: r = (1 - momentum) * r + momentum * batch_stat, with the unbiased
// variance for running_var. relu: y = max(BN(x), 0) in the same pass.
// Throws when a channel has a single value (N*H*W == 1), like PyTorch.
// quant: also write q = Q(y) in the same pass (see BnQuantEpilogue).
// residual: y = relu?(BN(x) + residual), the sum of a residual connection in the same pass
// (the ReLU, if any, after the sum; with quant, q = Q(y) of that sum).
// sync: synchronized batch norm (see BnStatsSync): the statistics of every process's batch.
struct BnQuantEpilogue;
class BnStatsSync;
void batchnorm2d_forward_train(Recording& rec, const Tensor& x, const Tensor& gamma,
                               const Tensor& beta, Tensor& running_mean, Tensor& running_var,
                               Tensor& saved_mean, Tensor& saved_invstd, Tensor& y,
                               float eps = 1e-5f, float momentum = 0.1f, bool relu = false,
                               const BnQuantEpilogue* quant = nullptr, const Tensor* residual = nullptr,
                               BnStatsSync* sync = nullptr);

// Synchronized batch norm (data parallel, PyTorch's SyncBatchNorm): a training batch split
// over several processes is normalised with the statistics of the whole batch. With a sync,
// the training forward and backward each record their statistics pass, copy the per-channel
// results to host memory, split the recording there (Recording::host_step: on every replay
// the host calls this object), and record the pass that applies the combined statistics:
// two segments more per BN layer and direction. The combination must give every process
// the same bits (they then normalise alike and update the running stats alike).
class BnStatsSync {
 public:
  virtual ~BnStatsSync() = default;
  virtual int processes() const = 0;
  // In place: this process's per-channel mean[channels] and biased variance[channels] of
  // `elements` values each -> those of every process's values (every process has as many).
  virtual void merge_moments(float* mean, float* var, int channels, double elements) = 0;
  // In place: the element-wise sum over the processes.
  virtual void sum(float* values, size_t n) = 0;
};

// The merge behind BnStatsSync::merge_moments, in double, in rank order (Chan et al.'s
// parallel variance: M2 = sum of the ranks' M2 + sum n (mean_r - mean)^2, never the
// cancelling E[x^2] - E[x]^2): means and vars are [ranks][channels], every rank with
// `elements` values per channel.
void merge_channel_moments(const float* means, const float* vars, int ranks, int channels, double elements,
                           float* mean_out, float* var_out);

// A uniform activation quantizer on [0, clip] that the training forward applies to its
// output in the same pass, saving the quantizer a read of y:
//   c = max(clip[0], 1e-8), q = round_half_away(clamp(y, 0, c) * (levels / c)) * (c * inv_levels)
// which is PACT's forward (src/quant/pact.h) bit for bit, with levels = 2^k - 1.
struct BnQuantEpilogue {
  const Tensor* clip = nullptr;  // F32 [1], read on every replay (a learned alpha)
  float levels = 0, inv_levels = 0;
  Tensor* q = nullptr;           // shaped like y
};

// Eval forward with the running statistics (optionally fused ReLU).
void batchnorm2d_forward_eval(Recording& rec, const Tensor& x, const Tensor& gamma,
                              const Tensor& beta, const Tensor& running_mean,
                              const Tensor& running_var, Tensor& y, float eps = 1e-5f,
                              bool relu = false);

// Training-mode backward from the saved statistics: dx, dgamma, dbeta. When the forward
// fused a ReLU pass relu = true and its output y (the gradient is masked by y > 0);
// otherwise y is ignored (pass any tensor, e.g. x). accumulate_dx / accumulate_params:
// add into dx / into dgamma and dbeta instead of overwriting.
// quant (not with relu): the backward of BnQuantEpilogue's quantizer in the same pass; dy
// is then the gradient of q, and y the BN output (see BnQuantBackward).
// grad_out (with relu or quant): also write the gradient that reaches BN's output there,
// dy [y > 0] or the quantizer's g (see BnQuantBackward), for that output's other consumer
// (a residual sum's shortcut, say). It may be quant->extra: each element is read, then written.
// sync (not with accumulate_params): dx from the sums of every process's batch; dgamma and
// dbeta keep this process's own sums (the gradient all-reduce averages them).
struct BnQuantBackward;
void batchnorm2d_backward(Recording& rec, const Tensor& x, const Tensor& y, const Tensor& dy,
                          const Tensor& gamma, const Tensor& saved_mean,
                          const Tensor& saved_invstd, Tensor& dx, bool accumulate_dx,
                          Tensor& dgamma, Tensor& dbeta, bool accumulate_params,
                          bool relu = false, const BnQuantBackward* quant = nullptr,
                          Tensor* grad_out = nullptr, BnStatsSync* sync = nullptr);

// PACT's backward (src/quant/pact.h), bit for bit, applied by the BN backward to the
// gradient it reads, which saves the quantizer a pass over y and dy and a gradient tensor:
//   g = dq [0 <= y < c] (+ extra, when given),  c = max(clip[0], 1e-8)
// and the clip gradient, PACT's sum_{y >= c} dq plus, when calibrated, CG-PACT's
// sum_{y < c} dq (round(r) - r) / levels with r = max(y, 0) * levels / c, left as one partial
// sum per channel in clip_grad_partials (F32 [C]) for the caller to merge.
struct BnQuantBackward {
  const Tensor* clip = nullptr;  // F32 [1]
  float levels = 0, inv_levels = 0;
  bool calibrated = false;
  const Tensor* extra = nullptr;       // optional, shaped like y: another consumer's gradient of y
  Tensor* clip_grad_partials = nullptr;  // F32 [C]
};

// How the training kernels reduce a channel's N*H*W values. Single: one workgroup per
// channel, one dispatch. Split (two-level, for GPUs, where C workgroups leave most of the
// device idle): workgroups (channel, chunk of N*H*W) write partial sums, one invocation per
// channel adds them in chunk order (deterministic), then (channel, chunk) workgroups
// normalize / write dx: three dispatches. saved_mean / saved_invstd and every other output
// keep their layout. Auto: Split when the device is not a CPU driver and the channels give
// fewer than 264 workgroups (two per SM of a 132-SM GPU), with chunks of at least one
// element per invocation; Single on CPU drivers (one workgroup per channel already keeps
// their few cores busy). VKQAT_BN_REDUCTION=single|split overrides Auto;
// set_bn_reduction overrides both (tests), chunk > 0 then fixing the elements (of the
// kernel's width, float or vec4) per chunk.
enum class BnReduction { Auto, Single, Split };
void set_bn_reduction(BnReduction r, uint32_t chunk = 0);
// "single", "split" or "auto" (per layer shape): what set_bn_reduction / the environment select.
const char* bn_reduction_setting();

namespace ref {
// shape = {N, C, H, W}. Outputs are resized. Sums in double.
template <class T>
std::vector<T> batchnorm2d_forward_train(const std::vector<T>& x, const std::vector<int>& shape,
                                         const std::vector<T>& gamma, const std::vector<T>& beta,
                                         std::vector<T>& running_mean, std::vector<T>& running_var,
                                         std::vector<T>& saved_mean, std::vector<T>& saved_invstd,
                                         double eps, double momentum, bool relu,
                                         const std::vector<T>* residual = nullptr);
template <class T>
std::vector<T> batchnorm2d_forward_eval(const std::vector<T>& x, const std::vector<int>& shape,
                                        const std::vector<T>& gamma, const std::vector<T>& beta,
                                        const std::vector<T>& running_mean,
                                        const std::vector<T>& running_var, double eps, bool relu);
// y is only read when relu.
template <class T>
void batchnorm2d_backward(const std::vector<T>& x, const std::vector<T>& y, const std::vector<T>& dy,
                          const std::vector<int>& shape, const std::vector<T>& gamma,
                          const std::vector<T>& saved_mean, const std::vector<T>& saved_invstd,
                          bool relu, std::vector<T>& dx, std::vector<T>& dgamma,
                          std::vector<T>& dbeta);
}  // namespace ref

}  // namespace vkqat::nn

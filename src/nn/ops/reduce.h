#pragma once
// Reductions recorded into a Recording, results left in small device tensors so a step can
// use them without a readback (SAT reads Var[W], DoReFa reads max|w|, a visualizer reads a
// histogram): sum, mean, variance, max|x| over a whole tensor, per row or per channel.
//
// Two passes, few barriers (they are expensive on CPU drivers): every invocation folds a
// long strided run of the input into registers (Kahan sums, Welford mean/M2, vec4 loads)
// and writes one partial to `scratch`; then one workgroup per output value merges the
// partials (Chan et al. for mean/M2). Float sums are therefore accurate to ~1e-7 relative
// to sum|x| even for millions of elements, and variance never uses E[x^2] - E[x]^2.
#include <cstdint>
#include <vector>

#include "backend/recording.h"
#include "nn/tensor.h"

namespace vkqat::nn {

// What one output value covers.
enum class ReduceScope {
  Tensor,    // the whole tensor: one value
  Rows,      // one value per index of dim 0, over all other dims (rows of [rows, cols],
             // output channels of OIHW weights)
  Channels,  // one value per index of dim 1, over dims 0, 2, 3, ... (channels of NCHW)
};

struct ReduceOptions {
  ReduceScope scope = ReduceScope::Tensor;
  uint32_t out_index = 0;  // the value of channel c goes to out[out_index + c]
  uint32_t var_index = 0;  // reduce_mean_var: the variance of channel c goes to var_out[var_index + c]
  bool unbiased = false;   // variance divides by n - 1 (torch.var's default) instead of n;
                           // n == 1 then gives NaN, as in PyTorch
};

// Number of output values (channels) for a tensor of `shape` in `scope`; throws Error when
// the scope needs more dimensions than the shape has.
int64_t reduce_channel_count(const std::vector<int>& shape, ReduceScope scope);

// F32 elements of scratch that reductions of a tensor of `shape` in `scope` need (depends on
// the device). One scratch tensor may serve every reduction of a recording as long as it is
// large enough for each (they then run one after the other).
int64_t reduce_scratch_numel(const Context& ctx, const std::vector<int>& shape, ReduceScope scope);
Tensor make_reduce_scratch(Context& ctx, const std::vector<int>& shape,
                           ReduceScope scope = ReduceScope::Tensor);

void reduce_sum(Recording& rec, const Tensor& x, Tensor& out, Tensor& scratch,
                const ReduceOptions& opt = {});
void reduce_mean(Recording& rec, const Tensor& x, Tensor& out, Tensor& scratch,
                 const ReduceOptions& opt = {});
void reduce_var(Recording& rec, const Tensor& x, Tensor& out, Tensor& scratch,
                const ReduceOptions& opt = {});
// Mean to mean_out[out_index + c], variance to var_out[var_index + c] (may be one tensor).
void reduce_mean_var(Recording& rec, const Tensor& x, Tensor& mean_out, Tensor& var_out,
                     Tensor& scratch, const ReduceOptions& opt = {});
// max |x|. (max |tanh(w)| = tanh(max |w|), since tanh is odd and increasing.)
void reduce_max_abs(Recording& rec, const Tensor& x, Tensor& out, Tensor& scratch,
                    const ReduceOptions& opt = {});

// Histogram of x into counts (U32, [bins + 2]): counts[0 .. bins-1] are bins of width
// (hi - lo) / bins over [lo, hi]; values below lo / above hi count in the first / last bin
// and also in counts[bins] (underflow) / counts[bins + 1] (overflow); NaN is ignored.
// The bin of v is min(uint((v - lo) * histogram_scale(bins, lo, hi)), bins - 1) in float.
// accumulate: add to the existing counts instead of zeroing them first.
void histogram(Recording& rec, const Tensor& x, Tensor& counts, float lo, float hi,
               bool accumulate = false);
float histogram_scale(int bins, float lo, float hi);

namespace ref {
// CPU twins in double; one value per channel of `scope`.
std::vector<double> reduce_sum(const std::vector<float>& x, const std::vector<int>& shape,
                               ReduceScope scope = ReduceScope::Tensor);
std::vector<double> reduce_mean(const std::vector<float>& x, const std::vector<int>& shape,
                                ReduceScope scope = ReduceScope::Tensor);
std::vector<double> reduce_var(const std::vector<float>& x, const std::vector<int>& shape,
                               ReduceScope scope = ReduceScope::Tensor, bool unbiased = false);
std::vector<double> reduce_max_abs(const std::vector<float>& x, const std::vector<int>& shape,
                                   ReduceScope scope = ReduceScope::Tensor);
std::vector<uint32_t> histogram(const std::vector<float>& x, int bins, float lo, float hi);
}  // namespace ref

}  // namespace vkqat::nn

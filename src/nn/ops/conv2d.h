#pragma once
// 2-D convolution (no bias) with PyTorch semantics and layouts: x NCHW, w OIHW
// [c_out, c_in / groups, kh, kw], y NCHW. groups is 1 or depthwise (groups == c_in == c_out).
// Dense convolutions run as implicit GEMM (no im2col buffer) in one of two kernel variants,
// chosen per device: register-blocked for CPU drivers, shared-memory tiled for GPUs.
#include <string>
#include <vector>

#include "backend/recording.h"
#include "nn/tensor.h"

namespace vkqat::nn {

struct Conv2dShape {
  int n = 0, c_in = 0, h = 0, w = 0, c_out = 0, kh = 0, kw = 0, stride = 1, pad = 0, groups = 1;
  int out_h() const { return (h + 2 * pad - kh) / stride + 1; }
  int out_w() const { return (w + 2 * pad - kw) / stride + 1; }
  bool depthwise() const { return groups > 1; }
  // Throws Error naming the offending field when the shape is not a valid convolution.
  void validate() const;
  double flops() const;  // 2 * multiply-adds of the forward pass
  std::vector<int> x_shape() const { return {n, c_in, h, w}; }
  std::vector<int> w_shape() const { return {c_out, c_in / groups, kh, kw}; }
  std::vector<int> y_shape() const { return {n, c_out, out_h(), out_w()}; }
  std::string str() const;  // "n128 c16->32 28x28 k3s2p1"
};

// y = conv(x, w). Overwrites y.
void conv2d_forward(Recording& rec, const Conv2dShape& s, const Tensor& x, const Tensor& w, Tensor& y);
// dx (+)= dL/dx given dy = dL/dy.
void conv2d_backward_data(Recording& rec, const Conv2dShape& s, const Tensor& dy, const Tensor& w,
                          Tensor& dx, bool accumulate);
// dw (+)= dL/dw given x and dy.
void conv2d_backward_weight(Recording& rec, const Conv2dShape& s, const Tensor& x, const Tensor& dy,
                            Tensor& dw, bool accumulate);

// Auto: RegisterBlocked on CPU drivers (lavapipe), Tiled on GPUs. The environment variable
// VKQAT_CONV_VARIANT=regblock|regblock-generic|tiled overrides Auto; set_conv_variant
// overrides both. RegisterBlocked runs 1x1 unpadded convolutions through dedicated GEMM
// kernels (conv2d_1x1_*) and everything else through the generic register-blocked ones;
// RegisterBlockedGeneric uses the generic ones for 1x1 too (tests, comparisons).
// Both need subgroup shuffles (every CPU driver and desktop GPU has them), the 1x1
// backward-weight kernel subgroup arithmetic.
enum class ConvVariant { Auto, RegisterBlocked, RegisterBlockedGeneric, Tiled };
void set_conv_variant(ConvVariant v);
// The variant Auto resolves to on this context (never Auto).
ConvVariant conv_variant(const Context& ctx);
const char* conv_variant_name(ConvVariant v);

// Depthwise kernels. Blocked (the default): conv2d_dw_{fwd,bwd_data}_blocked (a row segment
// per invocation, inputs under overlapping windows loaded once) and
// conv2d_dw_bwd_weight_split (channel x chunk workgroups, deterministic two-pass reduction).
// Direct: the former one-output-per-invocation kernels conv2d_dw_* (backward-weight: one
// invocation per weight over all of n * oh * ow), kept for comparison in `vkqat bench`.
// VKQAT_DW_VARIANT=blocked|direct overrides Auto; set_depthwise_variant overrides both.
enum class DepthwiseVariant { Auto, Blocked, Direct };
void set_depthwise_variant(DepthwiseVariant v);
DepthwiseVariant depthwise_variant();  // never Auto
const char* depthwise_variant_name(DepthwiseVariant v);

namespace ref {
// Plain loops accumulating in double; same layouts as above.
std::vector<float> conv2d_forward(const Conv2dShape& s, const std::vector<float>& x,
                                  const std::vector<float>& w);
std::vector<float> conv2d_backward_data(const Conv2dShape& s, const std::vector<float>& dy,
                                        const std::vector<float>& w);
std::vector<float> conv2d_backward_weight(const Conv2dShape& s, const std::vector<float>& x,
                                          const std::vector<float>& dy);
}  // namespace ref

}  // namespace vkqat::nn

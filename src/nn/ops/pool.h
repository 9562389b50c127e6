#pragma once
// Pooling on NCHW activations: global average pool, max pool 2x2 stride 2 (floor mode) and
// general max pool (k x k, stride, padding; torchvision's 3x3/s2/p1), forward and backward,
// with their CPU twins (namespace ref).
#include <string>
#include <vector>

#include "backend/recording.h"
#include "nn/tensor.h"

namespace vkqat::nn {

// A square max pool over x [n, c, h, w] with PyTorch's semantics (nn.MaxPool2d, floor mode,
// dilation 1): padding counts as -inf and never wins; pad <= k / 2, so every window holds at
// least one element of x.
struct Pool2dShape {
  int n = 0, c = 0, h = 0, w = 0, k = 2, stride = 2, pad = 0;
  int out_h() const { return (h + 2 * pad - k) / stride + 1; }
  int out_w() const { return (w + 2 * pad - k) / stride + 1; }
  // Throws Error naming the offending field when the shape is not a valid max pool.
  void validate() const;
  std::vector<int> x_shape() const { return {n, c, h, w}; }
  std::vector<int> y_shape() const { return {n, c, out_h(), out_w()}; }
  std::string str() const;  // "n2 c3 7x7 k3s2p1"
};

// y[n, c] = mean over H, W of x[n, c]. x: F32 [N, C, H, W], y: F32 [N, C].
void global_avg_pool_forward(Recording& rec, const Tensor& x, Tensor& y);
// dx[n, c, h, w] = dy[n, c] / (H * W) (accumulate: dx += ...).
void global_avg_pool_backward(Recording& rec, const Tensor& dy, Tensor& dx, bool accumulate);

// y: [N, C, H/2, W/2] (floor: an odd last row/column is dropped, like PyTorch). H, W >= 2.
// Ties: the first maximum in row-major window order (PyTorch's CPU rule); NaN wins.
void maxpool2x2_forward(Recording& rec, const Tensor& x, Tensor& y);
// dx gets dy at each window's argmax (recomputed from x), 0 elsewhere (accumulate: dx += ...).
void maxpool2x2_backward(Recording& rec, const Tensor& x, const Tensor& dy, Tensor& dx, bool accumulate);

// y = max over each k x k window (stride, pad) of x. x: s.x_shape(), y: s.y_shape().
// Ties: the first maximum in row-major window order (PyTorch's CPU rule); NaN wins.
void maxpool2d_forward(Recording& rec, const Pool2dShape& s, const Tensor& x, Tensor& y);
// dx[i] (+)= sum of dy over the windows whose argmax (recomputed from x) is element i.
// Deterministic with overlapping windows: each dx element gathers over the windows that
// cover it, in row-major window order (no atomics).
void maxpool2d_backward(Recording& rec, const Pool2dShape& s, const Tensor& x, const Tensor& dy, Tensor& dx,
                        bool accumulate);

namespace ref {
// shape = {N, C, H, W} of x. Sums in double.
template <class T>
std::vector<T> global_avg_pool_forward(const std::vector<T>& x, const std::vector<int>& shape);
template <class T>
std::vector<T> global_avg_pool_backward(const std::vector<T>& dy, const std::vector<int>& shape);
template <class T>
std::vector<T> maxpool2x2_forward(const std::vector<T>& x, const std::vector<int>& shape);
template <class T>
std::vector<T> maxpool2x2_backward(const std::vector<T>& x, const std::vector<T>& dy,
                                   const std::vector<int>& shape);
template <class T>
std::vector<T> maxpool2d_forward(const Pool2dShape& s, const std::vector<T>& x);
template <class T>
std::vector<T> maxpool2d_backward(const Pool2dShape& s, const std::vector<T>& x, const std::vector<T>& dy);
}  // namespace ref

}  // namespace vkqat::nn

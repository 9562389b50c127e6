#pragma once
// Pooling on NCHW activations: global average pool and max pool 2x2 stride 2 (floor mode),
// forward and backward, with their CPU twins (namespace ref).
#include <vector>

#include "backend/recording.h"
#include "nn/tensor.h"

namespace vkqat::nn {

// y[n, c] = mean over H, W of x[n, c]. x: F32 [N, C, H, W], y: F32 [N, C].
void global_avg_pool_forward(Recording& rec, const Tensor& x, Tensor& y);
// dx[n, c, h, w] = dy[n, c] / (H * W) (accumulate: dx += ...).
void global_avg_pool_backward(Recording& rec, const Tensor& dy, Tensor& dx, bool accumulate);

// y: [N, C, H/2, W/2] (floor: an odd last row/column is dropped, like PyTorch). H, W >= 2.
// Ties: the first maximum in row-major window order (PyTorch's CPU rule); NaN wins.
void maxpool2x2_forward(Recording& rec, const Tensor& x, Tensor& y);
// dx gets dy at each window's argmax (recomputed from x), 0 elsewhere (accumulate: dx += ...).
void maxpool2x2_backward(Recording& rec, const Tensor& x, const Tensor& dy, Tensor& dx, bool accumulate);

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
}  // namespace ref

}  // namespace vkqat::nn

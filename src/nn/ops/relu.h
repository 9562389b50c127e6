#pragma once
// ReLU and ReLU6 forward/backward on the device, and their CPU twins (namespace ref).
#include <vector>

#include "backend/recording.h"
#include "nn/tensor.h"

namespace vkqat::nn {

// y = max(x, 0). Shapes must match (any rank).
void relu_forward(Recording& rec, const Tensor& x, Tensor& y);
// dx = dy * [t > 0] (accumulate: dx += ...). `t` may be the forward input x or the forward
// output y: both give the same mask.
void relu_backward(Recording& rec, const Tensor& t, const Tensor& dy, Tensor& dx, bool accumulate);

// y = min(max(x, 0), 6) (torch.nn.functional.relu6 = hardtanh(x, 0, 6)); NaN propagates, like
// torch. Shapes must match (any rank).
void relu6_forward(Recording& rec, const Tensor& x, Tensor& y);
// dx = dy * [0 < x < 6] (accumulate: dx += ...). At exactly 0 and exactly 6 the gradient is 0,
// as in PyTorch's hardtanh_backward ((x <= 0 || x >= 6) ? 0 : dy). x must be the forward input
// (the output 6 cannot tell x = 6 from x > 6, but gives the same mask; either works). A NaN x
// gets gradient 0 here (torch's vectorized CPU kernel does the same; its scalar/CUDA path
// passes dy through: a NaN has already poisoned the loss either way).
void relu6_backward(Recording& rec, const Tensor& x, const Tensor& dy, Tensor& dx, bool accumulate);

namespace ref {
template <class T>
std::vector<T> relu_forward(const std::vector<T>& x);
template <class T>
std::vector<T> relu_backward(const std::vector<T>& t, const std::vector<T>& dy);
template <class T>
std::vector<T> relu6_forward(const std::vector<T>& x);
template <class T>
std::vector<T> relu6_backward(const std::vector<T>& x, const std::vector<T>& dy);
}  // namespace ref

}  // namespace vkqat::nn

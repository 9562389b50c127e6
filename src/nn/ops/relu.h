#pragma once
// ReLU forward/backward on the device, and its CPU twin (namespace ref).
#include <vector>

#include "backend/recording.h"
#include "nn/tensor.h"

namespace vkqat::nn {

// y = max(x, 0). Shapes must match (any rank).
void relu_forward(Recording& rec, const Tensor& x, Tensor& y);
// dx = dy * [t > 0] (accumulate: dx += ...). `t` may be the forward input x or the forward
// output y: both give the same mask.
void relu_backward(Recording& rec, const Tensor& t, const Tensor& dy, Tensor& dx, bool accumulate);

namespace ref {
template <class T>
std::vector<T> relu_forward(const std::vector<T>& x);
template <class T>
std::vector<T> relu_backward(const std::vector<T>& t, const std::vector<T>& dy);
}  // namespace ref

}  // namespace vkqat::nn

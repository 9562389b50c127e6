#pragma once
// Fully connected layer with bias, y = x W^T + b (PyTorch's nn.Linear), forward and
// backward, and its CPU twin (namespace ref). x: F32 [N, in] (or [N, ...] flattened to
// in = numel / N, e.g. a pooled [N, C, 1, 1]), W: F32 [out, in], b: F32 [out], y: F32 [N, out].
#include <vector>

#include "backend/recording.h"
#include "nn/tensor.h"

namespace vkqat::nn {

void linear_forward(Recording& rec, const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor& y);

// dx = dy W (skipped when dx is null), dW = dy^T x, db = sum over the batch of dy.
// accumulate_dx: dx += ...; accumulate_params: dW += ..., db += ... . dx has x's shape.
void linear_backward(Recording& rec, const Tensor& x, const Tensor& weight, const Tensor& dy,
                     Tensor* dx, bool accumulate_dx, Tensor& dweight, Tensor& dbias,
                     bool accumulate_params);

namespace ref {
// Sums in double. n = batch, in/out = features.
template <class T>
std::vector<T> linear_forward(const std::vector<T>& x, const std::vector<T>& weight,
                              const std::vector<T>& bias, int n, int in, int out);
template <class T>
void linear_backward(const std::vector<T>& x, const std::vector<T>& weight, const std::vector<T>& dy,
                     int n, int in, int out, std::vector<T>& dx, std::vector<T>& dweight,
                     std::vector<T>& dbias);
}  // namespace ref

}  // namespace vkqat::nn

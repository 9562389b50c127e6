#pragma once
// Elementwise add (the residual join), its backward, and a reusable gradient accumulate.
#include <vector>

#include "backend/recording.h"
#include "nn/tensor.h"

namespace vkqat::nn {

// y = a + b, or relu(a + b) with `relu` (one pass instead of two). All three shapes must match.
void add_forward(Recording& rec, const Tensor& a, const Tensor& b, Tensor& y, bool relu = false);
// Backward of y = a + b: da = dy (accumulate_a: da += dy), db likewise, in one pass.
// da and db must be different tensors.
void add_backward(Recording& rec, const Tensor& dy, Tensor& da, bool accumulate_a, Tensor& db,
                  bool accumulate_b);
// dst += scale * src (same shape): adds one gradient into another.
void accumulate(Recording& rec, const Tensor& src, Tensor& dst, float scale = 1.f);

namespace ref {
template <class T>
std::vector<T> add_forward(const std::vector<T>& a, const std::vector<T>& b);
}  // namespace ref

}  // namespace vkqat::nn

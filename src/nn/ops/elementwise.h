#pragma once
// Shared by the elementwise ops (relu, add): shape checks and the float/vec4 dispatch.
#include <string>

#include "backend/error.h"
#include "backend/kernel.h"
#include "backend/recording.h"
#include "nn/tensor.h"

namespace vkqat::nn::detail {

constexpr uint32_t kElementwiseLocal = 64, kElementwiseItems = 4;  // elements per invocation (*_common.glsl)

inline void require_same_shape(const char* op, const Tensor& a, const char* a_name, const Tensor& b,
                               const char* b_name) {
  if (a.shape() != b.shape() || a.dtype() != DType::F32 || b.dtype() != DType::F32)
    throw Error(std::string(op) + ": " + a_name + " " + a.shape_str() + " and " + b_name + " " + b.shape_str() +
                " must be F32 tensors of the same shape");
}

// Dispatches `shader` over push.n elements, kElementwiseItems per invocation (the loop of
// relu_common.glsl and its kin).
template <class P>
void dispatch_elements(Recording& rec, const std::string& shader, std::initializer_list<BufferView> views, P push,
                       const char* label) {
  const Kernel& k = rec.context().kernel(shader, {kElementwiseLocal, 1, 1}, {kElementwiseItems});
  const uint64_t per_group = kElementwiseLocal * kElementwiseItems;
  rec.dispatch(k, views, push, Groups{uint32_t((uint64_t(push.n) + per_group - 1) / per_group), 1, 1}, label);
}

// Dispatches `shader` (float elements) or `shader`_vec4 when the element count and every
// view allow 16-byte elements: CPU drivers pay per load instruction, so vec4 is ~3x faster
// there. push.n is set to the number of elements of the chosen width.
template <class P>
void dispatch_elementwise(Recording& rec, const std::string& shader, std::initializer_list<BufferView> views,
                          int64_t numel, P push, const char* label) {
  bool vec4 = numel % 4 == 0;
  for (const BufferView& v : views) vec4 = vec4 && v.offset % 16 == 0;
  push.n = uint32_t(vec4 ? numel / 4 : numel);
  dispatch_elements(rec, vec4 ? shader + "_vec4" : shader, views, push, label);
}

}  // namespace vkqat::nn::detail

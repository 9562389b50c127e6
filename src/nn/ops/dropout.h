#pragma once
// Training-time dropout with a counter-based mask, so that a step recorded once can be
// replayed with a fresh mask every step, and its CPU twin (namespace ref).
//
// The mask. Element i of a tensor is kept in step t when
//     dropout_hash(seed, t, i) >= threshold(p),    threshold(p) = floor(p * 2^32) (saturated),
// where dropout_hash is three rounds of the PCG output hash (integer only, so the CPU and
// the GPU compute the same bits):
//     dropout_hash(seed, t, i) = pcg(i + pcg(t + pcg(seed)))   (32-bit wrap-around)
// Kept elements are scaled by 1 / (1 - p): y = x * mask / (1 - p).
//
// The step counter t is not a push constant (that would be frozen in the recording): it is
// word 0 of a U32 tensor `step` [1] that the shaders read. Whoever owns the step (the
// trainer / graph engine) creates one such tensor, sets it once from the host (0, or the
// global step when resuming, so a resumed run draws the same masks), and records
// dropout_advance(rec, step) once per step after the last forward/backward that uses it
// (e.g. next to the optimizer). Forward and backward of the same step read the same t, so
// the backward needs no stored mask. Several dropout layers share the counter and differ by
// `seed` (e.g. the run seed mixed with the layer index).
//
// p = 0: y = x (no mask drawn); p = 1: y = 0 (no division by zero). Evaluation (training =
// false): y = x; the step counter is not read.
#include <cstdint>
#include <vector>

#include "backend/recording.h"
#include "nn/tensor.h"

namespace vkqat::nn {

struct DropoutParams {
  float p = 0.5f;      // drop probability, in [0, 1]
  uint32_t seed = 0;   // per layer
  // Throws Error unless 0 <= p <= 1 (NaN rejected).
  void validate() const;
};

// y = training ? x * mask / (1 - p) : x. x, y: F32 of the same shape (any rank); step: U32 [1].
void dropout_forward(Recording& rec, const DropoutParams& d, const Tensor& step, const Tensor& x, Tensor& y,
                     bool training);
// dx (+)= dy * mask / (1 - p), with the mask of the forward of the same step (training mode).
void dropout_backward(Recording& rec, const DropoutParams& d, const Tensor& step, const Tensor& dy, Tensor& dx,
                      bool accumulate);
// Records step[0] += 1 (one invocation).
void dropout_advance(Recording& rec, Tensor& step);

// The hash and the keep threshold, shared with shaders/dropout_common.glsl.
uint32_t dropout_hash(uint32_t seed, uint32_t step, uint32_t index);
uint32_t dropout_threshold(float p);

namespace ref {
// The mask (0 or 1 / (1 - p), as the shader computes the scale) of `count` elements in step `step`.
std::vector<float> dropout_scale(const DropoutParams& d, uint32_t step, size_t count);
template <class T>
std::vector<T> dropout_forward(const DropoutParams& d, uint32_t step, const std::vector<T>& x);
template <class T>
std::vector<T> dropout_backward(const DropoutParams& d, uint32_t step, const std::vector<T>& dy);
}  // namespace ref

}  // namespace vkqat::nn

#include "nn/ops/dropout.h"

#include <cmath>
#include <string>

#include "backend/error.h"
#include "backend/kernel.h"
#include "nn/ops/elementwise.h"

namespace vkqat::nn {

namespace {
// Must match the push-constant block of shaders/dropout_common.glsl.
struct DropoutPush {
  uint32_t n, seed, threshold;
  float scale;
  uint32_t accumulate;
};

uint32_t pcg(uint32_t v) {  // as pcg() in shaders/dropout_common.glsl
  uint32_t state = v * 747796405u + 2891336453u;
  uint32_t word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
  return (word >> 22u) ^ word;
}

// 1 / (1 - p) in float, as the shader gets it.
float keep_scale(float p) { return 1.0f / (1.0f - p); }

void check_step(const char* op, const Tensor& step) {
  if (!step.defined() || step.dtype() != DType::U32 || step.numel() != 1)
    throw Error(std::string(op) + ": the step counter must be a U32 tensor of one element, got " +
                (step.defined() ? step.shape_str() : "undefined"));
}

// out (+)= in * mask * scale through shaders/dropout*.comp (p < 1).
void record_masked(Recording& rec, const char* label, const DropoutParams& d, const Tensor& step, const Tensor& in,
                   Tensor& out, bool accumulate) {
  DropoutPush push{0, d.seed, dropout_threshold(d.p), keep_scale(d.p), accumulate ? 1u : 0u};
  // The step buffer is read as a whole uint: it need not be 16-byte aligned for vec4.
  bool vec4 = in.numel() % 4 == 0 && in.view().offset % 16 == 0 && out.view().offset % 16 == 0;
  push.n = uint32_t(vec4 ? in.numel() / 4 : in.numel());
  detail::dispatch_elements(rec, vec4 ? "dropout_vec4" : "dropout", {step.view(), in.view(), out.view()}, push,
                            label);
}
}  // namespace

void DropoutParams::validate() const {
  if (!(p >= 0.0f && p <= 1.0f)) throw Error("dropout: p must be in [0, 1], got " + std::to_string(p));
}

uint32_t dropout_hash(uint32_t seed, uint32_t step, uint32_t index) { return pcg(index + pcg(step + pcg(seed))); }

uint32_t dropout_threshold(float p) {
  // Kept when hash >= threshold: P(keep) = 1 - threshold / 2^32 = 1 - p (to 2^-32).
  const double t = std::floor(double(p) * 4294967296.0);
  return t >= 4294967295.0 ? 4294967295u : t <= 0 ? 0u : uint32_t(t);
}

void dropout_forward(Recording& rec, const DropoutParams& d, const Tensor& step, const Tensor& x, Tensor& y,
                     bool training) {
  const char* op = "dropout_forward";
  d.validate();
  detail::require_same_shape(op, x, "x", y, "y");
  if (training) check_step(op, step);
  if (!training || d.p == 0.0f) {
    if (x.view().buffer != y.view().buffer || x.view().offset != y.view().offset) rec.copy(x.view(), y.view(), op);
  } else if (d.p == 1.0f) {
    rec.fill(y.view(), 0, op);
  } else {
    record_masked(rec, "dropout", d, step, x, y, false);
  }
}

void dropout_backward(Recording& rec, const DropoutParams& d, const Tensor& step, const Tensor& dy, Tensor& dx,
                      bool accumulate) {
  const char* op = "dropout_backward";
  d.validate();
  detail::require_same_shape(op, dy, "dy", dx, "dx");
  check_step(op, step);
  if (d.p == 1.0f) {
    if (!accumulate) rec.fill(dx.view(), 0, op);
  } else {
    // p = 0 too: the mask then keeps everything (threshold 0), scale 1.
    record_masked(rec, "dropout_bwd", d, step, dy, dx, accumulate);
  }
}

void dropout_advance(Recording& rec, Tensor& step) {
  check_step("dropout_advance", step);
  const Kernel& k = rec.context().kernel("dropout_advance", {1, 1, 1}, {});
  rec.dispatch(k, {step.view()}, nullptr, 0, Groups{1, 1, 1}, "dropout_advance");
}

namespace ref {
std::vector<float> dropout_scale(const DropoutParams& d, uint32_t step, size_t count) {
  d.validate();
  std::vector<float> s(count, d.p == 1.0f ? 0.0f : 1.0f);
  if (d.p == 0.0f || d.p == 1.0f) return s;
  const uint32_t threshold = dropout_threshold(d.p);
  const float scale = keep_scale(d.p);
  for (size_t e = 0; e < count; ++e) s[e] = dropout_hash(d.seed, step, uint32_t(e)) >= threshold ? scale : 0.0f;
  return s;
}
template <class T>
std::vector<T> dropout_forward(const DropoutParams& d, uint32_t step, const std::vector<T>& x) {
  const std::vector<float> s = dropout_scale(d, step, x.size());
  std::vector<T> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = s[i] == 0.0f ? T(0) : x[i] * T(s[i]);
  return y;
}
template <class T>
std::vector<T> dropout_backward(const DropoutParams& d, uint32_t step, const std::vector<T>& dy) {
  return dropout_forward(d, step, dy);  // the same mask and scale
}
template std::vector<float> dropout_forward(const DropoutParams&, uint32_t, const std::vector<float>&);
template std::vector<double> dropout_forward(const DropoutParams&, uint32_t, const std::vector<double>&);
template std::vector<float> dropout_backward(const DropoutParams&, uint32_t, const std::vector<float>&);
template std::vector<double> dropout_backward(const DropoutParams&, uint32_t, const std::vector<double>&);
}  // namespace ref

}  // namespace vkqat::nn

#include "nn/ops/relu.h"

#include "backend/error.h"
#include "backend/kernel.h"

namespace vkqat::nn {

namespace {
constexpr uint32_t kLocal = 64, kItems = 4;  // elements per invocation, see relu_common.glsl

void require_same_shape(const char* op, const Tensor& a, const char* a_name, const Tensor& b,
                        const char* b_name) {
  if (a.shape() != b.shape() || a.dtype() != DType::F32 || b.dtype() != DType::F32)
    throw Error(std::string(op) + ": " + a_name + " " + a.shape_str() + " and " + b_name + " " +
                b.shape_str() + " must be F32 tensors of the same shape");
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
  const Kernel& k = rec.context().kernel(vec4 ? shader + "_vec4" : shader, {kLocal, 1, 1}, {kItems});
  Groups groups{uint32_t((uint64_t(push.n) + kLocal * kItems - 1) / (kLocal * kItems)), 1, 1};
  rec.dispatch(k, views, push, groups, label);
}
}  // namespace

void relu_forward(Recording& rec, const Tensor& x, Tensor& y) {
  require_same_shape("relu_forward", x, "x", y, "y");
  struct { uint32_t n; } push{};
  dispatch_elementwise(rec, "relu", {x.view(), y.view()}, x.numel(), push, "relu");
}

void relu_backward(Recording& rec, const Tensor& t, const Tensor& dy, Tensor& dx, bool accumulate) {
  require_same_shape("relu_backward", t, "mask source", dy, "dy");
  require_same_shape("relu_backward", dy, "dy", dx, "dx");
  struct { uint32_t n, accumulate; } push{0, accumulate ? 1u : 0u};
  dispatch_elementwise(rec, "relu_bwd", {t.view(), dy.view(), dx.view()}, dy.numel(), push, "relu_bwd");
}

namespace ref {
template <class T>
std::vector<T> relu_forward(const std::vector<T>& x) {
  std::vector<T> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] < 0 ? T(0) : x[i];
  return y;
}
template <class T>
std::vector<T> relu_backward(const std::vector<T>& t, const std::vector<T>& dy) {
  std::vector<T> dx(dy.size());
  for (size_t i = 0; i < dy.size(); ++i) dx[i] = t[i] > 0 ? dy[i] : T(0);
  return dx;
}
template std::vector<float> relu_forward(const std::vector<float>&);
template std::vector<double> relu_forward(const std::vector<double>&);
template std::vector<float> relu_backward(const std::vector<float>&, const std::vector<float>&);
template std::vector<double> relu_backward(const std::vector<double>&, const std::vector<double>&);
}  // namespace ref

}  // namespace vkqat::nn

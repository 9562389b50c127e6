#include "nn/ops/relu.h"

#include "backend/error.h"
#include "backend/kernel.h"
#include "nn/ops/elementwise.h"

namespace vkqat::nn {

using detail::dispatch_elementwise;
using detail::require_same_shape;

namespace {
// ReLU and ReLU6 share their shaders' shape (relu6 is relu's with RELU_CAP): one forward
// and one backward recorder, named by the kernel.
void clamp_forward(Recording& rec, const char* kernel, const Tensor& x, Tensor& y) {
  require_same_shape(kernel, x, "x", y, "y");
  struct { uint32_t n; } push{};
  dispatch_elementwise(rec, kernel, {x.view(), y.view()}, x.numel(), push, kernel);
}
void clamp_backward(Recording& rec, const char* kernel, const Tensor& t, const Tensor& dy, Tensor& dx,
                    bool accumulate) {
  require_same_shape(kernel, t, "mask source", dy, "dy");
  require_same_shape(kernel, dy, "dy", dx, "dx");
  struct { uint32_t n, accumulate; } push{0, accumulate ? 1u : 0u};
  dispatch_elementwise(rec, kernel, {t.view(), dy.view(), dx.view()}, dy.numel(), push, kernel);
}
}  // namespace

void relu_forward(Recording& rec, const Tensor& x, Tensor& y) { clamp_forward(rec, "relu", x, y); }
void relu_backward(Recording& rec, const Tensor& t, const Tensor& dy, Tensor& dx, bool accumulate) {
  clamp_backward(rec, "relu_bwd", t, dy, dx, accumulate);
}
void relu6_forward(Recording& rec, const Tensor& x, Tensor& y) { clamp_forward(rec, "relu6", x, y); }
void relu6_backward(Recording& rec, const Tensor& x, const Tensor& dy, Tensor& dx, bool accumulate) {
  clamp_backward(rec, "relu6_bwd", x, dy, dx, accumulate);
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
template <class T>
std::vector<T> relu6_forward(const std::vector<T>& x) {
  std::vector<T> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] < 0 ? T(0) : x[i] > 6 ? T(6) : x[i];  // NaN stays
  return y;
}
template <class T>
std::vector<T> relu6_backward(const std::vector<T>& x, const std::vector<T>& dy) {
  std::vector<T> dx(dy.size());
  for (size_t i = 0; i < dy.size(); ++i) dx[i] = x[i] > 0 && x[i] < 6 ? dy[i] : T(0);
  return dx;
}
template std::vector<float> relu6_forward(const std::vector<float>&);
template std::vector<double> relu6_forward(const std::vector<double>&);
template std::vector<float> relu6_backward(const std::vector<float>&, const std::vector<float>&);
template std::vector<double> relu6_backward(const std::vector<double>&, const std::vector<double>&);
template std::vector<float> relu_forward(const std::vector<float>&);
template std::vector<double> relu_forward(const std::vector<double>&);
template std::vector<float> relu_backward(const std::vector<float>&, const std::vector<float>&);
template std::vector<double> relu_backward(const std::vector<double>&, const std::vector<double>&);
}  // namespace ref

}  // namespace vkqat::nn

#include "nn/ops/add.h"

#include "backend/error.h"
#include "backend/kernel.h"

namespace vkqat::nn {

namespace {
constexpr uint32_t kLocal = 64, kItems = 4;  // elements per invocation, see add_common.glsl

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

void add_forward(Recording& rec, const Tensor& a, const Tensor& b, Tensor& y) {
  require_same_shape("add_forward", a, "a", b, "b");
  require_same_shape("add_forward", a, "a", y, "y");
  struct { uint32_t n; } push{};
  dispatch_elementwise(rec, "add", {a.view(), b.view(), y.view()}, a.numel(), push, "add");
}

void add_backward(Recording& rec, const Tensor& dy, Tensor& da, bool accumulate_a, Tensor& db,
                  bool accumulate_b) {
  require_same_shape("add_backward", dy, "dy", da, "da");
  require_same_shape("add_backward", dy, "dy", db, "db");
  if (da.view().buffer == db.view().buffer && da.view().offset == db.view().offset)
    throw Error("add_backward: da and db must be different tensors");
  struct { uint32_t n, accumulate_a, accumulate_b; } push{0, accumulate_a ? 1u : 0u, accumulate_b ? 1u : 0u};
  dispatch_elementwise(rec, "add_bwd", {dy.view(), da.view(), db.view()}, dy.numel(), push, "add_bwd");
}

void accumulate(Recording& rec, const Tensor& src, Tensor& dst, float scale) {
  require_same_shape("accumulate", src, "src", dst, "dst");
  struct { uint32_t n; float scale; } push{0, scale};
  dispatch_elementwise(rec, "add_accumulate", {src.view(), dst.view()}, src.numel(), push, "accumulate");
}

namespace ref {
template <class T>
std::vector<T> add_forward(const std::vector<T>& a, const std::vector<T>& b) {
  std::vector<T> y(a.size());
  for (size_t i = 0; i < a.size(); ++i) y[i] = a[i] + b[i];
  return y;
}
template std::vector<float> add_forward(const std::vector<float>&, const std::vector<float>&);
template std::vector<double> add_forward(const std::vector<double>&, const std::vector<double>&);
}  // namespace ref

}  // namespace vkqat::nn

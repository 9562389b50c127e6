#include "nn/ops/add.h"

#include "backend/error.h"
#include "backend/kernel.h"
#include "nn/ops/elementwise.h"

namespace vkqat::nn {

using detail::dispatch_elementwise;
using detail::require_same_shape;

void add_forward(Recording& rec, const Tensor& a, const Tensor& b, Tensor& y, bool relu) {
  require_same_shape("add_forward", a, "a", b, "b");
  require_same_shape("add_forward", a, "a", y, "y");
  struct { uint32_t n, relu; } push{0, relu ? 1u : 0u};
  dispatch_elementwise(rec, "add", {a.view(), b.view(), y.view()}, a.numel(), push, relu ? "add_relu" : "add");
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

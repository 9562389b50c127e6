#include "nn/ops/grid.h"

#include <cmath>

#include "nn/ops/elementwise.h"

namespace vkqat::nn {
namespace {

void require_scale(const char* op, const Grid& g) {
  if (g.scale && g.scale->dtype() != DType::F32)
    throw Error(std::string(op) + ": a grid's scale must be an F32 tensor (element 0 is read)");
}

}  // namespace

void grid_levels(Recording& rec, const Tensor& x, const Grid& g, Tensor& y) {
  detail::require_same_shape("grid_levels", x, "x", y, "y");
  require_scale("grid_levels", g);
  struct { uint32_t n; float mul; uint32_t use_scale; } push{uint32_t(x.numel()), g.mul, g.scale ? 1u : 0u};
  // Without a scale tensor the binding is never read: bind x there (both read-only).
  detail::dispatch_elements(rec, "grid_levels", {x.view(), (g.scale ? *g.scale : x).view(), y.view()}, push,
                            "grid_levels");
}

void grid_rescale(Recording& rec, Tensor& y, const Grid& a, const Grid& b) {
  if (y.dtype() != DType::F32) throw Error("grid_rescale: y must be F32");
  require_scale("grid_rescale", a);
  require_scale("grid_rescale", b);
  struct { uint32_t n; float a_mul, b_mul; uint32_t use; } push{uint32_t(y.numel()), a.mul, b.mul,
                                                                 (a.scale ? 1u : 0u) | (b.scale ? 2u : 0u)};
  // An absent scale's binding is never read: bind the other scale, or y itself.
  const Tensor& sa = a.scale ? *a.scale : b.scale ? *b.scale : y;
  const Tensor& sb = b.scale ? *b.scale : sa;
  detail::dispatch_elements(rec, "grid_rescale", {y.view(), sa.view(), sb.view()}, push, "grid_rescale");
}

namespace ref {

std::vector<float> grid_levels(const std::vector<float>& x, float scale, float mul) {
  const float step = mul * scale;
  const float inv = step != 0.f ? 1.f / step : 0.f;
  std::vector<float> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = std::nearbyint(x[i] * inv);  // default mode: half to even
  return y;
}

std::vector<float> grid_rescale(const std::vector<float>& y, float a_scale, float a_mul, float b_scale, float b_mul) {
  const float sa = a_mul * a_scale, sb = b_mul * b_scale, s = sa * sb;
  std::vector<float> out(y.size());
  for (size_t i = 0; i < y.size(); ++i) out[i] = y[i] * s;
  return out;
}

}  // namespace ref
}  // namespace vkqat::nn

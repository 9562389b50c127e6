#include "nn/ops/pool.h"

#include "backend/error.h"
#include "backend/kernel.h"

namespace vkqat::nn {

namespace {
constexpr uint32_t kLocal = 64, kItems = 4;  // pool_gavg_bwd: elements per invocation

// Must match the push-constant block of shaders/pool_common.glsl (sizes in floats).
struct PoolParams {
  uint32_t planes, h, w, ho, wo, accumulate;
};

PoolParams params_for(const Tensor& x, bool accumulate = false) {
  return PoolParams{uint32_t(x.dim(0) * x.dim(1)), uint32_t(x.dim(2)), uint32_t(x.dim(3)),
                    uint32_t(x.dim(2) / 2), uint32_t(x.dim(3) / 2), accumulate ? 1u : 0u};
}

// Whether to use the vec4 variant of a kernel: the shape allows it and every view is 16-byte
// aligned (CPU drivers pay per load instruction: vec4 is several times faster there).
bool use_vec4(bool shape_ok, std::initializer_list<BufferView> views) {
  for (const BufferView& v : views) shape_ok = shape_ok && v.offset % 16 == 0;
  return shape_ok;
}

const Kernel& kernel(Recording& rec, const std::string& shader, bool vec4, std::vector<uint32_t> spec = {}) {
  return rec.context().kernel(vec4 ? shader + "_vec4" : shader, {kLocal, 1, 1}, spec);
}

void require_nchw(const char* op, const Tensor& t, const char* name) {
  if (t.rank() != 4 || t.dtype() != DType::F32)
    throw Error(std::string(op) + ": " + name + " must be an F32 [N, C, H, W] tensor, got " + t.shape_str());
}

void require_shape(const char* op, const Tensor& t, const char* name, const std::vector<int>& want) {
  if (t.shape() != want || t.dtype() != DType::F32)
    throw Error(std::string(op) + ": " + name + " " + t.shape_str() + " must be F32 " + shape_str(want));
}

std::vector<int> maxpool_out_shape(const char* op, const Tensor& x) {
  require_nchw(op, x, "x");
  if (x.dim(2) < 2 || x.dim(3) < 2)
    throw Error(std::string(op) + ": x " + x.shape_str() + " is smaller than the 2x2 window");
  return {x.dim(0), x.dim(1), x.dim(2) / 2, x.dim(3) / 2};
}
// Must match the push-constant block of shaders/pool_max2d_common.glsl.
struct MaxPool2dPush {
  int32_t planes, h, w, ho, wo, k, stride, pad, accumulate;
};

MaxPool2dPush max_pool2d_push(const Pool2dShape& s, bool accumulate) {
  return {s.n * s.c, s.h, s.w, s.out_h(), s.out_w(), s.k, s.stride, s.pad, accumulate ? 1 : 0};
}

void check_pool_tensor(const char* op, const Pool2dShape& s, const char* name, const Tensor& t,
                       const std::vector<int>& want) {
  if (!t.defined() || t.shape() != want || t.dtype() != DType::F32)
    throw Error(std::string(op) + ": " + name + " is " + (t.defined() ? t.shape_str() : "undefined") +
                " but max pool " + s.str() + " needs F32 " + shape_str(want));
}
}  // namespace

void Pool2dShape::validate() const {
  auto fail = [&](const std::string& why) { throw Error("max pool " + str() + ": " + why); };
  if (n < 1 || c < 1 || h < 1 || w < 1) fail("n, c, h, w must be >= 1");
  if (k < 1) fail("kernel size k must be >= 1");
  if (stride < 1) fail("stride must be >= 1");
  if (pad < 0 || pad > k / 2) fail("pad must be in [0, k / 2] (PyTorch's rule), got " + std::to_string(pad));
  if (k > h + 2 * pad || k > w + 2 * pad)
    fail("kernel " + std::to_string(k) + " is bigger than the padded input " + std::to_string(h + 2 * pad) + "x" +
         std::to_string(w + 2 * pad));
  // The shaders index with 32-bit ints.
  if (int64_t(n) * c * h * w >= (int64_t(1) << 31)) fail("tensor too large for 32-bit indexing");
}

std::string Pool2dShape::str() const {
  return "n" + std::to_string(n) + " c" + std::to_string(c) + " " + std::to_string(h) + "x" + std::to_string(w) +
         " k" + std::to_string(k) + "s" + std::to_string(stride) + "p" + std::to_string(pad);
}

void global_avg_pool_forward(Recording& rec, const Tensor& x, Tensor& y) {
  const char* op = "global_avg_pool_forward";
  require_nchw(op, x, "x");
  require_shape(op, y, "y", {x.dim(0), x.dim(1)});
  PoolParams p = params_for(x);
  const Kernel& k = kernel(rec, "pool_gavg", use_vec4(p.h * p.w % 4 == 0, {x.view()}));
  rec.dispatch_1d(k, {x.view(), y.view()}, p, p.planes, "global_avg_pool");
}

void global_avg_pool_backward(Recording& rec, const Tensor& dy, Tensor& dx, bool accumulate) {
  const char* op = "global_avg_pool_backward";
  require_nchw(op, dx, "dx");
  require_shape(op, dy, "dy", {dx.dim(0), dx.dim(1)});
  PoolParams p = params_for(dx, accumulate);
  bool vec4 = use_vec4(p.h * p.w % 4 == 0, {dx.view()});
  const Kernel& k = kernel(rec, "pool_gavg_bwd", vec4, {kItems});
  uint64_t elements = uint64_t(dx.numel()) / (vec4 ? 4 : 1);
  Groups groups{uint32_t((elements + kLocal * kItems - 1) / (kLocal * kItems)), 1, 1};
  rec.dispatch(k, {dy.view(), dx.view()}, p, groups, "global_avg_pool_bwd");
}

void maxpool2x2_forward(Recording& rec, const Tensor& x, Tensor& y) {
  const char* op = "maxpool2x2_forward";
  require_shape(op, y, "y", maxpool_out_shape(op, x));
  PoolParams p = params_for(x);
  const Kernel& k = kernel(rec, "pool_max", use_vec4(p.w % 4 == 0, {x.view(), y.view()}));
  rec.dispatch_1d(k, {x.view(), y.view()}, p, uint64_t(p.planes) * p.ho, "maxpool2x2");
}

void maxpool2x2_backward(Recording& rec, const Tensor& x, const Tensor& dy, Tensor& dx, bool accumulate) {
  const char* op = "maxpool2x2_backward";
  require_shape(op, dy, "dy", maxpool_out_shape(op, x));
  require_shape(op, dx, "dx", x.shape());
  PoolParams p = params_for(x, accumulate);
  const Kernel& k = kernel(rec, "pool_max_bwd", use_vec4(p.w % 4 == 0, {x.view(), dy.view(), dx.view()}));
  uint64_t row_pairs = uint64_t(p.planes) * ((p.h + 1) / 2);
  rec.dispatch_1d(k, {x.view(), dy.view(), dx.view()}, p, row_pairs, "maxpool2x2_bwd");
}

}  // namespace vkqat::nn

namespace vkqat::nn {

void maxpool2d_forward(Recording& rec, const Pool2dShape& s, const Tensor& x, Tensor& y) {
  const char* op = "maxpool2d_forward";
  s.validate();
  check_pool_tensor(op, s, "x", x, s.x_shape());
  check_pool_tensor(op, s, "y", y, s.y_shape());
  const Kernel& k = rec.context().kernel("pool_max2d", {kLocal, 1, 1});
  rec.dispatch_1d(k, {x.view(), y.view()}, max_pool2d_push(s, false), uint64_t(y.numel()), "maxpool2d");
}

void maxpool2d_backward(Recording& rec, const Pool2dShape& s, const Tensor& x, const Tensor& dy, Tensor& dx,
                        bool accumulate) {
  const char* op = "maxpool2d_backward";
  s.validate();
  check_pool_tensor(op, s, "x", x, s.x_shape());
  check_pool_tensor(op, s, "dy", dy, s.y_shape());
  check_pool_tensor(op, s, "dx", dx, s.x_shape());
  const Kernel& k = rec.context().kernel("pool_max2d_bwd", {kLocal, 1, 1});
  rec.dispatch_1d(k, {x.view(), dy.view(), dx.view()}, max_pool2d_push(s, accumulate), uint64_t(dx.numel()),
                  "maxpool2d_bwd");
}

}  // namespace vkqat::nn

#include "nn/ops/linear.h"

#include "backend/error.h"
#include "backend/kernel.h"

namespace vkqat::nn {

namespace {
// Must match the push-constant block of shaders/linear_gemm.comp.
struct GemmParams {
  uint32_t m, n, k;
  uint32_t a_stride_m, a_stride_k, b_stride_k, b_stride_n;
  uint32_t accumulate, use_bias;
};
constexpr uint32_t kBlockM = 4, kBlockN = 4;  // outputs per invocation
constexpr uint32_t kLocalX = 8, kLocalY = 8;

// C[m, n] (+)= sum_k A[m, k] B[k, n] (+ bias[n]); A and B addressed through the strides in p.
void record_gemm(Recording& rec, const GemmParams& p, const Tensor& a, const Tensor& b,
                 const Tensor* bias, Tensor& c, const char* label) {
  const Kernel& k = rec.context().kernel("linear_gemm", {kLocalX, kLocalY, 1}, {kBlockM, kBlockN});
  Groups groups = Recording::groups_for(k, (p.n + kBlockN - 1) / kBlockN, (p.m + kBlockM - 1) / kBlockM);
  // Without a bias the binding still needs a buffer: a (read-only, never read).
  rec.dispatch(k, {a.view(), b.view(), bias ? bias->view() : a.view(), c.view()}, p, groups, label);
}

struct Dims {
  int n, in, out;
};

// Checks x against W and returns the dimensions. x may carry trailing dims (flattened).
Dims dims_for(const char* op, const Tensor& x, const char* x_name, const Tensor& weight) {
  if (weight.rank() != 2 || weight.dtype() != DType::F32)
    throw Error(std::string(op) + ": weight must be an F32 [out, in] tensor, got " + weight.shape_str());
  if (x.rank() < 2 || x.dtype() != DType::F32 || x.numel() / x.dim(0) != weight.dim(1))
    throw Error(std::string(op) + ": " + x_name + " " + x.shape_str() + " does not match weight " +
                weight.shape_str() + " (want [N, " + std::to_string(weight.dim(1)) + "])");
  return Dims{x.dim(0), weight.dim(1), weight.dim(0)};
}

void require_shape(const char* op, const Tensor& t, const char* name, const std::vector<int>& want) {
  if (t.shape() != want || t.dtype() != DType::F32)
    throw Error(std::string(op) + ": " + name + " " + t.shape_str() + " must be F32 " + shape_str(want));
}
}  // namespace

void linear_forward(Recording& rec, const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor& y) {
  const char* op = "linear_forward";
  Dims d = dims_for(op, x, "x", weight);
  require_shape(op, bias, "bias", {d.out});
  require_shape(op, y, "y", {d.n, d.out});
  GemmParams p{uint32_t(d.n), uint32_t(d.out), uint32_t(d.in), uint32_t(d.in), 1, 1, uint32_t(d.in), 0, 1};
  record_gemm(rec, p, x, weight, &bias, y, "linear_fwd");
}

void linear_backward(Recording& rec, const Tensor& x, const Tensor& weight, const Tensor& dy,
                     Tensor* dx, bool accumulate_dx, Tensor& dweight, Tensor& dbias,
                     bool accumulate_params) {
  const char* op = "linear_backward";
  Dims d = dims_for(op, x, "x", weight);
  require_shape(op, dy, "dy", {d.n, d.out});
  require_shape(op, dweight, "dweight", weight.shape());
  require_shape(op, dbias, "dbias", {d.out});
  if (dx) {
    require_shape(op, *dx, "dx", x.shape());
    GemmParams p{uint32_t(d.n), uint32_t(d.in), uint32_t(d.out), uint32_t(d.out), 1, uint32_t(d.in), 1,
                 accumulate_dx ? 1u : 0u, 0};
    record_gemm(rec, p, dy, weight, nullptr, *dx, "linear_bwd_data");
  }
  uint32_t acc = accumulate_params ? 1u : 0u;
  GemmParams p{uint32_t(d.out), uint32_t(d.in), uint32_t(d.n), 1, uint32_t(d.out), uint32_t(d.in), 1, acc, 0};
  record_gemm(rec, p, dy, x, nullptr, dweight, "linear_bwd_weight");
  struct { uint32_t rows, features, accumulate; } push{uint32_t(d.n), uint32_t(d.out), acc};
  const Kernel& k = rec.context().kernel("linear_bias_grad", {64, 1, 1});
  rec.dispatch_1d(k, {dy.view(), dbias.view()}, push, uint32_t(d.out), "linear_bwd_bias");
}

namespace ref {
template <class T>
std::vector<T> linear_forward(const std::vector<T>& x, const std::vector<T>& weight,
                              const std::vector<T>& bias, int n, int in, int out) {
  std::vector<T> y(size_t(n) * out);
  for (int r = 0; r < n; ++r)
    for (int o = 0; o < out; ++o) {
      double s = double(bias[o]);
      for (int i = 0; i < in; ++i) s += double(x[size_t(r) * in + i]) * double(weight[size_t(o) * in + i]);
      y[size_t(r) * out + o] = T(s);
    }
  return y;
}

template <class T>
void linear_backward(const std::vector<T>& x, const std::vector<T>& weight, const std::vector<T>& dy,
                     int n, int in, int out, std::vector<T>& dx, std::vector<T>& dweight,
                     std::vector<T>& dbias) {
  dx.assign(size_t(n) * in, T(0));
  dweight.assign(size_t(out) * in, T(0));
  dbias.assign(out, T(0));
  for (int r = 0; r < n; ++r)
    for (int i = 0; i < in; ++i) {
      double s = 0;
      for (int o = 0; o < out; ++o) s += double(dy[size_t(r) * out + o]) * double(weight[size_t(o) * in + i]);
      dx[size_t(r) * in + i] = T(s);
    }
  for (int o = 0; o < out; ++o) {
    for (int i = 0; i < in; ++i) {
      double s = 0;
      for (int r = 0; r < n; ++r) s += double(dy[size_t(r) * out + o]) * double(x[size_t(r) * in + i]);
      dweight[size_t(o) * in + i] = T(s);
    }
    double s = 0;
    for (int r = 0; r < n; ++r) s += double(dy[size_t(r) * out + o]);
    dbias[o] = T(s);
  }
}

#define VKQAT_LINEAR_REF(T)                                                                     \
  template std::vector<T> linear_forward(const std::vector<T>&, const std::vector<T>&,           \
                                         const std::vector<T>&, int, int, int);                  \
  template void linear_backward(const std::vector<T>&, const std::vector<T>&, const std::vector<T>&, \
                                int, int, int, std::vector<T>&, std::vector<T>&, std::vector<T>&);
VKQAT_LINEAR_REF(float)
VKQAT_LINEAR_REF(double)
#undef VKQAT_LINEAR_REF
}  // namespace ref

}  // namespace vkqat::nn

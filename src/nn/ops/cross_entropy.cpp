#include "nn/ops/cross_entropy.h"

#include <cmath>
#include <limits>

#include "backend/error.h"
#include "backend/kernel.h"

namespace vkqat::nn {

void cross_entropy(Recording& rec, const Tensor& logits, const Tensor& labels, Tensor& loss,
                   Tensor& correct, Tensor* dlogits, float scale, bool accumulate) {
  const std::string op = "cross_entropy: ";
  if (logits.rank() != 2 || logits.dtype() != DType::F32)
    throw Error(op + "logits must be an F32 [N, classes] tensor, got " + logits.shape_str());
  int n = logits.dim(0), classes = logits.dim(1);
  if (labels.rank() != 1 || labels.dim(0) != n || labels.dtype() == DType::F32)
    throw Error(op + "labels " + labels.shape_str() + " must be U32/I32 [" + std::to_string(n) +
                "] for logits " + logits.shape_str());
  if (loss.numel() != 1 || loss.dtype() != DType::F32)
    throw Error(op + "loss must be a 1-element F32 tensor, got " + loss.shape_str());
  if (correct.numel() != 1 || correct.dtype() == DType::F32)
    throw Error(op + "correct must be a 1-element U32/I32 tensor, got " + correct.shape_str());
  if (dlogits && (dlogits->shape() != logits.shape() || dlogits->dtype() != DType::F32))
    throw Error(op + "dlogits " + dlogits->shape_str() + " must be F32 of the logits' shape " +
                logits.shape_str());

  struct { uint32_t rows, classes; float grad_scale; uint32_t accumulate; } push{
      uint32_t(n), uint32_t(classes), scale / float(n), accumulate ? 1u : 0u};
  // One workgroup does the whole batch (tree reduction, deterministic order).
  // A power of two within the device's limits; a float and a uint of shared memory each.
  const uint32_t local = pick_workgroup_size(rec.context().info(), rec.context().info().is_cpu() ? 64 : 256, 8);
  Context& ctx = rec.context();
  if (dlogits) {
    const Kernel& k = ctx.kernel("cross_entropy", {local, 1, 1});
    rec.dispatch(k, {logits.view(), labels.view(), loss.view(), correct.view(), dlogits->view()}, push,
                 Groups{1, 1, 1}, "cross_entropy");
  } else {
    const Kernel& k = ctx.kernel("cross_entropy_nograd", {local, 1, 1});
    rec.dispatch(k, {logits.view(), labels.view(), loss.view(), correct.view()}, push, Groups{1, 1, 1},
                 "cross_entropy_nograd");
  }
}

namespace ref {
template <class T>
CrossEntropyResult cross_entropy(const std::vector<T>& logits, const std::vector<uint32_t>& labels,
                                 int n, int k, double scale, std::vector<T>& dlogits) {
  CrossEntropyResult result;
  dlogits.assign(size_t(n) * k, T(0));
  double loss_sum = 0;
  for (int r = 0; r < n; ++r) {
    const T* z = &logits[size_t(r) * k];
    int best = 0;
    for (int j = 1; j < k; ++j)
      if (z[j] > z[best]) best = j;
    double m = double(z[best]), s = 0;
    for (int j = 0; j < k; ++j) s += std::exp(double(z[j]) - m);
    uint32_t label = labels[r];
    bool valid = label < uint32_t(k);
    bool ignored = label == kIgnoreLabel;
    loss_sum += ignored ? 0.0 : valid ? std::log(s) + m - double(z[label]) : std::numeric_limits<double>::quiet_NaN();
    result.correct += valid && uint32_t(best) == label ? 1 : 0;
    for (int j = 0; j < k; ++j) {
      double onehot = uint32_t(j) == label ? 1.0 : 0.0;
      dlogits[size_t(r) * k + j] = ignored ? T(0) : T((std::exp(double(z[j]) - m) / s - onehot) * scale / n);
    }
  }
  result.loss = loss_sum / n;
  return result;
}
template CrossEntropyResult cross_entropy(const std::vector<float>&, const std::vector<uint32_t>&, int,
                                          int, double, std::vector<float>&);
template CrossEntropyResult cross_entropy(const std::vector<double>&, const std::vector<uint32_t>&, int,
                                          int, double, std::vector<double>&);
}  // namespace ref

}  // namespace vkqat::nn

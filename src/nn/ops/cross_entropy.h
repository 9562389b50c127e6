#pragma once
// Softmax cross-entropy over a batch (PyTorch's F.cross_entropy, mean reduction), fused
// with accuracy counting and the logits gradient; and its CPU twin (namespace ref).
#include <cstdint>
#include <vector>

#include "backend/recording.h"
#include "nn/tensor.h"

namespace vkqat::nn {

// Label value that contributes nothing (no loss, never correct, zero gradient): the padding
// rows of a partial evaluation batch.
constexpr uint32_t kIgnoreLabel = 0xffffffffu;

// logits: F32 [N, K]; labels: U32 or I32 [N], each in [0, K) or kIgnoreLabel (another label gives a NaN
// loss); loss: F32 [1]; correct: U32 or I32 [1]. Everything that changes per step is read
// from buffers, so the recording can be replayed with new logits/labels.
//   accumulate = false: loss = mean_i CE_i,   correct = #{i : argmax_i == label_i}
//   accumulate = true:  loss += sum_i CE_i,   correct += #{...}   (epoch totals on the
//                       device: divide the sum by the number of samples at the end)
// The loss is never scaled. argmax: the first maximum wins.
// dlogits (optional, F32 [N, K], always overwritten) = (softmax - onehot) * scale / N,
// i.e. the gradient of scale * mean CE (scale: e.g. the auxiliary-loss weight).
void cross_entropy(Recording& rec, const Tensor& logits, const Tensor& labels, Tensor& loss,
                   Tensor& correct, Tensor* dlogits, float scale = 1.f, bool accumulate = false);

namespace ref {
struct CrossEntropyResult {
  double loss = 0;       // mean over the batch
  uint32_t correct = 0;  // argmax == label
};
// Sums in double. dlogits is resized to n * k.
template <class T>
CrossEntropyResult cross_entropy(const std::vector<T>& logits, const std::vector<uint32_t>& labels,
                                 int n, int k, double scale, std::vector<T>& dlogits);
}  // namespace ref

}  // namespace vkqat::nn

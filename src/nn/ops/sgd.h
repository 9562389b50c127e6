#pragma once
// SGD with momentum, Nesterov and weight decay, exactly torch.optim.SGD (dampening 0):
//   g = grad + weight_decay * w
//   buf = momentum * buf + g          (buf starts at zero, so the first step gives buf = g,
//                                      which is PyTorch's initialisation)
//   g = nesterov ? g + momentum * buf : buf
//   w -= lr * g
// The learning rate is read on the device from step_params[lr_index], so one recorded
// training step can be replayed every step while the host writes the scheduled lr into
// step_params before each replay.
#include <cstdint>
#include <vector>

#include "backend/recording.h"
#include "nn/tensor.h"

namespace vkqat::nn {

struct SgdOptions {
  float momentum = 0.9f;
  float weight_decay = 0.f;  // per tensor: 0 for BN parameters, biases, quantizer parameters
  bool nesterov = false;     // needs momentum > 0, as in PyTorch
};

// w, grad, momentum_buf: F32 of equal element count; momentum_buf is zeroed once by the
// caller before the first step. step_params: F32, lr at lr_index.
void sgd_update(Recording& rec, Tensor& w, const Tensor& grad, Tensor& momentum_buf,
                const Tensor& step_params, uint32_t lr_index, const SgdOptions& opt);

// One dispatch (or a few) for many parameter tensors: bit-identical to one sgd_update per
// tensor. Tensors are grouped by the buffers that hold their weight, gradient and momentum;
// each group's spans stay within maxStorageBufferRange (and max_span_bytes when > 0, a test
// switch), and a chunk table on the device says where each workgroup's elements lie.
struct SgdTensor {
  Tensor* w = nullptr;
  const Tensor* grad = nullptr;
  Tensor* momentum = nullptr;
  float weight_decay = 0.f;  // 0 for BN parameters, biases, quantizer parameters
};
// momentum / nesterov as in SgdOptions (shared by all tensors). Returns the dispatch count.
int sgd_update_multi(Recording& rec, const std::vector<SgdTensor>& tensors, const Tensor& step_params,
                     uint32_t lr_index, float momentum, bool nesterov, uint64_t max_span_bytes = 0);

namespace ref {
// One step of the formula above in double, rounded to float like the parameters.
void sgd_update(std::vector<float>& w, const std::vector<float>& grad, std::vector<float>& momentum_buf,
                float lr, const SgdOptions& opt);
}  // namespace ref

}  // namespace vkqat::nn

#pragma once
// Full-precision auxiliary module (Zhuang et al., CVPR 2020; METHODS.md section 4),
// attached to a residual network during training only:
//   b = BN(conv1x1(tap_0))                              tap_0: stem output before its quantizer
//   for each residual block i (tap_{i+1}: its sum before the output quantizer):
//     if the shape changes: b = BN(conv1x1_stride(b))
//     b = ReLU(b + BN(conv1x1(tap_{i+1})))
//   aux_logits = FC_aux(global_avg_pool(b))
// Everything here is full precision. Taps are not detached: backward writes the gradient
// of the aux loss w.r.t. every tap into the network's gradient buffer there, to which the
// network's backward adds its own, so the aux route reaches the low-precision weights.
// State-dict names: aux.*.
#include <memory>
#include <vector>

#include "nn/model/conv_bn_unit.h"
#include "nn/model/network.h"

namespace vkqat::quant {

class AuxModule : public nn::AuxiliaryHead {
 public:
  AuxModule(Context& ctx, nn::Network& net);
  void init(uint64_t seed) override;
  void forward(Recording& rec, bool train) override;  // after the network's forward
  void backward(Recording& rec) override;             // before the network's backward
  nn::Tensor& logits() override { return logits_; }
  nn::Tensor& d_logits() override { return d_logits_; }
  const std::vector<nn::Parameter*>& parameters() const override { return params_; }
  const nn::NamedTensors& state() const override { return state_; }
  const std::vector<std::string>& batchnorm_names() const override { return bn_names_; }
  std::vector<nn::BatchNorm2dLayer*> batchnorm_layers() override { return bn_layers_; }

 private:
  struct Stage {
    std::unique_ptr<nn::ConvBnUnit> adaptor;  // conv1x1 + BN on the tap
    std::unique_ptr<nn::ConvBnUnit> down;     // conv1x1 stride + BN on b, where the shape changes
    nn::Tensor out_buf, d_sum_buf, d_out;     // out = relu(b + adaptor); d_sum: its gradient before the ReLU
    nn::Tensor* out = nullptr;                // stage 0: the adaptor's output itself (no copy)
    nn::Tensor* d_sum = nullptr;              // without `down`: the previous stage's d_out itself (no copy)
  };
  void add_unit(nn::ConvBnUnit& u);

  Context& ctx_;
  std::vector<nn::FeatureTap> taps_;
  std::vector<Stage> stages_;
  nn::Tensor pooled_, d_pooled_, logits_, d_logits_;
  nn::LinearLayer fc_;
  std::vector<nn::Parameter*> params_;
  nn::NamedTensors state_;
  std::vector<std::string> bn_names_;
  std::vector<nn::BatchNorm2dLayer*> bn_layers_;
};

}  // namespace vkqat::quant

#pragma once
// Layers: parameters + the ops that compute their forward and backward, side by side.
// Activations and their gradients are owned by the network that wires layers together.
#include <random>
#include <string>
#include <vector>

#include "nn/model/quant_hooks.h"
#include "nn/ops/batchnorm2d.h"
#include "nn/ops/conv2d.h"
#include "nn/tensor.h"

namespace vkqat::nn {

// Deterministic initialisers (same seed, same numbers on every platform).
class InitRng {
 public:
  explicit InitRng(uint64_t seed) : rng_(seed) {}
  float uniform(float lo, float hi);
  float normal(float mean, float stddev);  // Box-Muller, no std::normal_distribution
 private:
  std::mt19937_64 rng_;
};

class Conv2dLayer {
 public:
  Conv2dLayer() = default;
  Conv2dLayer(Context& ctx, const std::string& name, const Conv2dShape& shape);
  void init(InitRng& rng);  // Kaiming normal, fan_out, ReLU gain (torchvision ResNet)
  // With a quantizer, forward first writes wq = Q(weight) and convolves with wq.
  void set_quantizer(Context& ctx, std::unique_ptr<WeightQuantizer> q);
  void forward(Recording& rec, const Tensor& x, Tensor& y, bool train = true);
  // dx may be null (the input is the image); accumulate_dx adds into dx.
  void backward(Recording& rec, const Tensor& x, const Tensor& dy, Tensor* dx, bool accumulate_dx);
  const Tensor& effective_weight() const { return quant ? wq : weight.value; }
  // Exact evaluation (nn/ops/grid.h): the network says its input lies on grid `g`; if the
  // weight quantizer has a grid too, an eval forward convolves the integer indices (the
  // input's written to `scratch`, shared by the network's convs) and rescales the exact sum.
  // Training keeps the plain float convolution (its gradients need the values anyway).
  void set_input_grid(Context& ctx, std::optional<Grid> g, const Tensor* scratch);
  bool exact_eval() const { return input_grid && quant && quant->grid(); }
  std::string name;  // state-dict prefix ("layer1.0.conv1")
  Conv2dShape shape;
  Parameter weight;
  std::unique_ptr<WeightQuantizer> quant;
  Tensor wq, d_wq;  // only with a quantizer
  std::optional<Grid> input_grid;
  Tensor x_levels, w_levels;  // only with an input grid; x_levels aliases the shared scratch
};

class BatchNorm2dLayer {
 public:
  BatchNorm2dLayer() = default;
  BatchNorm2dLayer(Context& ctx, const std::string& name, int batch, int channels);
  void init();  // gamma 1, beta 0, running mean 0, running var 1
  // relu: fused y = max(bn(x), 0). train: batch statistics + running-stat update.
  // quant (training only): also write the quantized output in the same pass.
  // residual: y = relu?(bn(x) + residual), the sum of a residual connection in the same pass.
  void forward(Recording& rec, const Tensor& x, Tensor& y, bool train, bool relu,
               const BnQuantEpilogue* quant = nullptr, const Tensor* residual = nullptr);
  // grad_out (with relu): also write the gradient of the ReLU's input there.
  void backward(Recording& rec, const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx, bool relu,
                bool accumulate_dx, Tensor* grad_out = nullptr);
  // y = Q(bn(x)) for an activation quantizer Q: BN's output goes to `pre` (Q's backward reads
  // it); a uniform-clip quantizer (PACT) runs in BN's pass when training. Backward: d_pre =
  // Q'(dy) (accumulate_pre: added to what d_pre holds), then dx (+)= bn'(d_pre); with a
  // uniform clip both in BN's backward pass, which only reads d_pre (when accumulate_pre)
  // and leaves it as it was unless write_d_pre (for another consumer of pre).
  void forward_quantized(Recording& rec, const Tensor& x, ActQuantizer& act, Tensor& pre, Tensor& y, bool train);
  void backward_quantized(Recording& rec, const Tensor& x, ActQuantizer& act, const Tensor& pre, const Tensor& dy,
                          Tensor& d_pre, bool accumulate_pre, Tensor& dx, bool accumulate_dx,
                          bool write_d_pre = false);
  std::string name;
  Parameter gamma, beta;
  Tensor running_mean, running_var, saved_mean, saved_invstd;
  Tensor clip_grad_partials;  // [C], the fused quantizer backward's (allocated on first use)
  float eps = 1e-5f, momentum = 0.1f;
  // Synchronized batch norm (--sync-bn under mpirun): training statistics over every
  // process's batch; set before recording (see BnStatsSync). Null: this process's batch.
  BnStatsSync* sync = nullptr;
};

class LinearLayer {
 public:
  LinearLayer() = default;
  LinearLayer(Context& ctx, const std::string& name, int in, int out);
  void init(InitRng& rng);  // PyTorch default: U(-1/sqrt(in), 1/sqrt(in)) for weight and bias
  void set_quantizer(Context& ctx, std::unique_ptr<WeightQuantizer> q);  // also SAT's rescale
  void forward(Recording& rec, const Tensor& x, Tensor& y, bool train = true);
  void backward(Recording& rec, const Tensor& x, const Tensor& dy, Tensor* dx, bool accumulate_dx);
  const Tensor& effective_weight() const { return quant ? wq : weight.value; }
  int in = 0, out = 0;
  Parameter weight, bias;
  std::unique_ptr<WeightQuantizer> quant;
  Tensor wq, d_wq;
};

}  // namespace vkqat::nn

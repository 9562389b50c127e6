#pragma once
// Layers: parameters + the ops that compute their forward and backward, side by side.
// Activations and their gradients are owned by the network that wires layers together.
#include <random>
#include <string>
#include <vector>

#include "nn/ops/conv2d.h"
#include "nn/tensor.h"

namespace vkqat::nn {

// A trainable tensor with its gradient and SGD momentum buffer.
struct Parameter {
  std::string name;  // state-dict name, torchvision convention ("layer1.0.conv1.weight")
  Tensor value, grad, momentum;
  bool weight_decay = true;  // false for BN parameters and biases
  Parameter() = default;
  Parameter(Context& ctx, std::string name, std::vector<int> shape, bool decay);
};

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
  void forward(Recording& rec, const Tensor& x, Tensor& y) const;
  // dx may be null (the input is the image); accumulate_dx adds into dx.
  void backward(Recording& rec, const Tensor& x, const Tensor& dy, Tensor* dx, bool accumulate_dx);
  Conv2dShape shape;
  Parameter weight;
};

class BatchNorm2dLayer {
 public:
  BatchNorm2dLayer() = default;
  BatchNorm2dLayer(Context& ctx, const std::string& name, int batch, int channels);
  void init();  // gamma 1, beta 0, running mean 0, running var 1
  // relu: fused y = max(bn(x), 0). train: batch statistics + running-stat update.
  void forward(Recording& rec, const Tensor& x, Tensor& y, bool train, bool relu);
  void backward(Recording& rec, const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx, bool relu,
                bool accumulate_dx);
  std::string name;
  Parameter gamma, beta;
  Tensor running_mean, running_var, saved_mean, saved_invstd;
  float eps = 1e-5f, momentum = 0.1f;
};

class LinearLayer {
 public:
  LinearLayer() = default;
  LinearLayer(Context& ctx, const std::string& name, int in, int out);
  void init(InitRng& rng);  // PyTorch default: U(-1/sqrt(in), 1/sqrt(in)) for weight and bias
  void forward(Recording& rec, const Tensor& x, Tensor& y) const;
  void backward(Recording& rec, const Tensor& x, const Tensor& dy, Tensor* dx, bool accumulate_dx);
  int in = 0, out = 0;
  Parameter weight, bias;
};

}  // namespace vkqat::nn

#pragma once
#include <string>
#include <vector>

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

}  // namespace vkqat::nn

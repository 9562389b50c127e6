#pragma once
// The built-in models as descriptions (model_desc.h): small builder functions of width,
// depth, classes and input shape, with exactly the state-dict names, shapes and order of the
// hand-written classes (resnet.h), which tests/test_model_desc.cpp checks.
#include "nn/model/model_desc.h"
#include "nn/model/network.h"

namespace vkqat::nn {

// Throws Error naming the model when cfg.name is not a built-in model.
ModelDescription describe_model(const ModelConfig& cfg);

}  // namespace vkqat::nn

#pragma once
// The built-in models as descriptions (model_desc.h): small builder functions of width,
// depth, classes and input shape, with exactly the state-dict names, shapes and order of the
// hand-written classes they replaced (checkpoints from then load; tests/test_model_desc.cpp).
#include "nn/model/model_desc.h"
#include "nn/model/network.h"
#include "nn/safetensors.h"

namespace vkqat::nn {

// Throws Error naming the model when cfg.name is not a built-in model, and for the
// torchvision models an Error naming the flag (--stem, --width-mult) or, for images too small
// for the stem, the layer whose output side would reach 0.
ModelDescription describe_model(const ModelConfig& cfg);

// resnet18/34/50 (torchvision.models.resnet*, --width = first-stage channels, 64 = theirs),
// mobilenet-v2 (torchvision.models.mobilenet_v2, --width-mult) and mobilenet-v1: built only
// as descriptions (GraphNetwork runs them), with torchvision's state-dict names.
std::vector<std::string> torchvision_model_names();
bool is_torchvision_model(const std::string& name);
bool is_mobilenet(const std::string& name);  // sized by --width-mult, not --width
// How the model is sized, for messages: "width 16", "width-mult 0.25", or the model file.
std::string size_label(const ModelConfig& cfg);

// For a state dict without vkqat metadata (a PyTorch file) and a torchvision model named in
// cfg: cfg with in_channels and classes read from the first conv's and the classifier's
// weights (conv1 / features.0.0, fc / classifier[.1]), the ResNets' width and stem from
// conv1.weight, the MobileNets' width multiplier as the first of cfg's and the multiples of
// 0.01 up to 4 whose whole state dict has the file's shapes (cfg's own when none has: the
// loader then names the misshaped tensor and both shapes). Other models: cfg unchanged.
// Throws Error naming the file and tensor when the first conv or classifier weight is absent.
ModelConfig config_from_state_shapes(ModelConfig cfg, const SafeTensors& st);

}  // namespace vkqat::nn

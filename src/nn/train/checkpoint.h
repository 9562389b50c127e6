#pragma once
// Checkpoints are safetensors files whose tensor names and layouts are those of a
// torchvision-style PyTorch ResNet state_dict (conv1.weight, bn1.running_var,
// layer2.0.downsample.0.weight, fc.bias, ...), so `model.load_state_dict(load_file(F))`
// works in PyTorch and a PyTorch state_dict saved with safetensors loads here.
// BatchNorm num_batches_tracked is written as I64 and accepted (ignored) on load.
// __metadata__["vkqat"] holds the model config and input normalization as JSON.
#include <nlohmann/json.hpp>

#include <string>

#include "nn/model/network.h"
#include "nn/model/quant_hooks.h"
#include "nn/safetensors.h"

namespace vkqat::nn {

// Reads every state tensor back from the device into a SafeTensors (F32, + I64 counters).
SafeTensors network_state(const Network& net, int64_t batches_tracked);
// Uploads the matching tensors; every state tensor must be present with the right shape
// (Error names the file, tensor and shapes). Unknown tensors are an error unless their
// names start with one of `ignored_prefixes`.
// ignore_unexpected: tensors the net does not have are skipped (loading a quantized or
// aux checkpoint into a plain net, or weights before the quantizers exist).
void load_network_state(Network& net, const SafeTensors& st, const std::vector<std::string>& ignored_prefixes = {},
                        bool ignore_unexpected = false);
// Uploads the tensors of `named` that `st` has; returns how many.
int load_named_tensors(const NamedTensors& named, const SafeTensors& st);

// The config stored in a vkqat checkpoint's metadata, or null when absent (PyTorch file).
nlohmann::json checkpoint_metadata(const SafeTensors& st);

}  // namespace vkqat::nn

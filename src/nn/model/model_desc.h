#pragma once
// Models as data: a JSON description of a network as a list of layers, each with its
// state-dict name (torchvision conventions), its op, its inputs and its attributes, checked
// and shape-inferred here (no Vulkan). GraphNetwork (graph_network.h) runs a description;
// describe_model() (model_builders.h) gives the built-in models' descriptions.
//
//   {"input": {"channels": 1, "height": 28, "width": 28}, "classes": 10,
//    "layers": [{"name": "conv1", "op": "conv", "out": 8, "kernel": 3, "padding": 1},
//               {"name": "bn1", "op": "batchnorm"}, ...],
//    "taps": ["layer1.0"]}
//
// A layer's "inputs" default to the layer before it ("input" for the first).
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace vkqat::nn {

enum class LayerOp { Conv, BatchNorm, Relu, Relu6, Add, MaxPool, GlobalAvgPool, Flatten, Linear, Dropout };
const char* layer_op_name(LayerOp op);

struct LayerDesc {
  std::string name;  // unique; the state-dict prefix of a layer with parameters ("layer1.0.conv1")
  LayerOp op = LayerOp::Relu;
  std::vector<std::string> inputs;  // earlier layers' names or "input"
  // Attributes (those of the op; the rest keep their defaults).
  int out = 0;                  // conv: output channels; linear: out features
  int kernel = 0, stride = 1, padding = 0, groups = 1;  // conv, maxpool
  bool bias = false;            // conv (default false) and linear (default true)
  float p = 0.5f;               // dropout probability
  // Filled by shape inference.
  std::vector<int> input_index;  // per input: the layer's index, -1 for the image
  std::vector<int> shape;        // output per image: {C, H, W} or {features}
  int64_t params = 0;            // trainable parameters (BN: gamma and beta)
  double flops = 0;              // forward, per image (2 per multiply-add)
};

struct ModelDescription {
  std::string source;  // the file it came from, or "builtin NAME"; errors name it
  int in_channels = 0, height = 0, width = 0, classes = 0;
  std::vector<LayerDesc> layers;
  std::vector<std::string> taps;  // layer names the aux module reads; empty: every add
  int index_of(const std::string& name) const;  // -1 if none
  int64_t parameter_count() const;
  double flops() const;
  nlohmann::json to_json() const;
};

// Parses and checks a description; throws Error naming `source` and the layer on anything
// wrong (unknown op or attribute, dangling or forward input, shape mismatch, duplicate name,
// groups not dividing the channels, last layer not giving [classes], ...).
ModelDescription parse_model_description(const nlohmann::json& j, const std::string& source);
ModelDescription load_model_description(const std::string& path);
// Shape inference and validation of an already-built description (parse calls it).
void infer_shapes(ModelDescription& d);

// The state dict a description's parameters make, in layer order, with torchvision names
// and layouts: conv NAME.weight [out, in/groups, k, k] (+ NAME.bias), batchnorm NAME.weight,
// .bias, .running_mean, .running_var, linear NAME.weight [out, in], NAME.bias.
std::vector<std::pair<std::string, std::vector<int>>> state_shapes(const ModelDescription& d);

std::string dims_str(const std::vector<int>& s);  // "[8,14,14]" (no Vulkan, unlike Tensor's shape_str)

}  // namespace vkqat::nn

#include "nn/model/model_builders.h"

#include "backend/error.h"

namespace vkqat::nn {

namespace {

// Appends layers to a description, each reading the previous one unless told otherwise.
struct Builder {
  ModelDescription d;
  std::string last = "input";

  const std::string& add(LayerDesc l, std::vector<std::string> inputs = {}) {
    l.inputs = inputs.empty() ? std::vector<std::string>{last} : std::move(inputs);
    d.layers.push_back(std::move(l));
    last = d.layers.back().name;
    return last;
  }
  static LayerDesc layer(const std::string& name, LayerOp op) {
    LayerDesc l;
    l.name = name;
    l.op = op;
    return l;
  }
  const std::string& conv(const std::string& name, int out, int kernel, int stride, int padding,
                          std::vector<std::string> inputs = {}) {
    LayerDesc l = layer(name, LayerOp::Conv);
    l.out = out, l.kernel = kernel, l.stride = stride, l.padding = padding;
    return add(std::move(l), std::move(inputs));
  }
  const std::string& op(const std::string& name, LayerOp o, std::vector<std::string> inputs = {}) {
    return add(layer(name, o), std::move(inputs));
  }
  const std::string& maxpool2(const std::string& name) {
    LayerDesc l = layer(name, LayerOp::MaxPool);
    l.kernel = 2, l.stride = 2;
    return add(std::move(l));
  }
  const std::string& linear(const std::string& name, int out) {
    LayerDesc l = layer(name, LayerOp::Linear);
    l.out = out, l.bias = true;
    return add(std::move(l));
  }
};

// He et al.'s CIFAR ResNet with BasicBlocks and 1x1 conv + BN shortcuts (resnet.h). Taps:
// the stem's BN output and every residual sum, as ResNet::feature_taps.
void resnet(Builder& b, const ModelConfig& cfg, int blocks_per_stage) {
  b.conv("conv1", cfg.width, 3, 1, 1);
  b.d.taps.push_back(b.op("bn1", LayerOp::BatchNorm));
  b.op("conv1.act", LayerOp::Relu);
  int c = cfg.width;
  for (int stage = 0; stage < 3; ++stage) {
    const int c_out = cfg.width << stage;
    for (int i = 0; i < blocks_per_stage; ++i) {
      const int stride = (stage > 0 && i == 0) ? 2 : 1;
      const std::string n = "layer" + std::to_string(stage + 1) + "." + std::to_string(i), x = b.last;
      b.conv(n + ".conv1", c_out, 3, stride, 1);
      b.op(n + ".bn1", LayerOp::BatchNorm);
      b.op(n + ".act1", LayerOp::Relu);
      b.conv(n + ".conv2", c_out, 3, 1, 1);
      const std::string main = b.op(n + ".bn2", LayerOp::BatchNorm);
      std::string shortcut = x;
      if (stride != 1 || c != c_out) {
        b.conv(n + ".downsample.0", c_out, 1, stride, 0, {x});
        shortcut = b.op(n + ".downsample.1", LayerOp::BatchNorm);
      }
      b.d.taps.push_back(b.op(n, LayerOp::Add, {main, shortcut}));
      b.op(n + ".act2", LayerOp::Relu);
      c = c_out;
    }
  }
  b.op("avgpool", LayerOp::GlobalAvgPool);
  b.linear("fc", cfg.classes);
}

// Pre-activation ResNet (preact_resnet.cpp): bare stem conv, BN-ReLU-conv blocks whose 1x1
// shortcut conv (no BN) reads the block's first activation, a final BN + ReLU ("bn").
void preact_resnet(Builder& b, const ModelConfig& cfg, int blocks_per_stage) {
  b.d.taps.push_back(b.conv("conv1", cfg.width, 3, 1, 1));
  int c = cfg.width;
  for (int stage = 0; stage < 3; ++stage) {
    const int c_out = cfg.width << stage;
    for (int i = 0; i < blocks_per_stage; ++i) {
      const int stride = (stage > 0 && i == 0) ? 2 : 1;
      const std::string n = "layer" + std::to_string(stage + 1) + "." + std::to_string(i), x = b.last;
      b.op(n + ".bn1", LayerOp::BatchNorm);
      const std::string a1 = b.op(n + ".act1", LayerOp::Relu);
      b.conv(n + ".conv1", c_out, 3, stride, 1);
      b.op(n + ".bn2", LayerOp::BatchNorm);
      b.op(n + ".act2", LayerOp::Relu);
      const std::string main = b.conv(n + ".conv2", c_out, 3, 1, 1);
      const std::string shortcut =
          (stride != 1 || c != c_out) ? b.conv(n + ".downsample.0", c_out, 1, stride, 0, {a1}) : x;
      b.d.taps.push_back(b.op(n, LayerOp::Add, {main, shortcut}));
      c = c_out;
    }
  }
  b.op("bn", LayerOp::BatchNorm);
  b.op("bn.act", LayerOp::Relu);
  b.op("avgpool", LayerOp::GlobalAvgPool);
  b.linear("fc", cfg.classes);
}

// resnet.h's PlainCnn: three conv-BN-ReLU units, 2x2 max pools between them, no blocks.
void plain_cnn(Builder& b, const ModelConfig& cfg) {
  for (int u = 1; u <= 3; ++u) {
    const std::string n = std::to_string(u);
    b.conv("conv" + n, cfg.width << (u - 1), 3, 1, 1);
    b.op("bn" + n, LayerOp::BatchNorm);
    b.op("conv" + n + ".act", LayerOp::Relu);
    if (u < 3) b.maxpool2("pool" + n);
  }
  b.op("avgpool", LayerOp::GlobalAvgPool);
  b.linear("fc", cfg.classes);
}

}  // namespace

ModelDescription describe_model(const ModelConfig& cfg) {
  Builder b;
  b.d.source = "builtin " + cfg.name;
  b.d.in_channels = cfg.in_channels, b.d.height = cfg.height, b.d.width = cfg.width_px, b.d.classes = cfg.classes;
  const std::string& n = cfg.name;
  if (n == "resnet20")
    resnet(b, cfg, 3);
  else if (n == "resnet32")
    resnet(b, cfg, 5);
  else if (n == "resnet56")
    resnet(b, cfg, 9);
  else if (n == "preact-resnet20")
    preact_resnet(b, cfg, 3);
  else if (n == "plain-cnn")
    plain_cnn(b, cfg);
  else {
    std::string known;
    for (auto& m : model_names()) known += (known.empty() ? "" : ", ") + m;
    throw Error("--model " + n + ": unknown model (known: " + known + ")");
  }
  infer_shapes(b.d);
  return std::move(b.d);
}

}  // namespace vkqat::nn

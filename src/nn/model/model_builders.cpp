#include "nn/model/model_builders.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iterator>

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

// The CIFAR ResNets' three stages of blocks_per_stage blocks: block "layerS.B" from c_in to
// c_out channels (width << stage), stride 2 at the first block of stages 2 and 3.
template <class Block>
void for_each_cifar_block(const ModelConfig& cfg, int blocks_per_stage, Block block) {
  int c = cfg.width;
  for (int stage = 0; stage < 3; ++stage) {
    const int c_out = cfg.width << stage;
    for (int i = 0; i < blocks_per_stage; ++i) {
      block("layer" + std::to_string(stage + 1) + "." + std::to_string(i), c, c_out, (stage > 0 && i == 0) ? 2 : 1);
      c = c_out;
    }
  }
}

// He et al.'s CIFAR ResNet (2016, section 4.2) with BasicBlocks and 1x1 conv + BN ("option B")
// shortcuts where the shape changes. Taps: the stem's BN output and every residual sum.
void resnet(Builder& b, const ModelConfig& cfg, int blocks_per_stage) {
  b.conv("conv1", cfg.width, 3, 1, 1);
  b.d.taps.push_back(b.op("bn1", LayerOp::BatchNorm));
  b.op("conv1.act", LayerOp::Relu);
  for_each_cifar_block(cfg, blocks_per_stage, [&](const std::string& n, int c, int c_out, int stride) {
      const std::string x = b.last;
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
  });
  b.op("avgpool", LayerOp::GlobalAvgPool);
  b.linear("fc", cfg.classes);
}

// Pre-activation ResNet (He et al. 2016b): bare stem conv, BN-ReLU-conv blocks whose 1x1
// shortcut conv (no BN) reads the block's first activation, a final BN + ReLU ("bn").
void preact_resnet(Builder& b, const ModelConfig& cfg, int blocks_per_stage) {
  b.d.taps.push_back(b.conv("conv1", cfg.width, 3, 1, 1));
  for_each_cifar_block(cfg, blocks_per_stage, [&](const std::string& n, int c, int c_out, int stride) {
      const std::string x = b.last;
      b.op(n + ".bn1", LayerOp::BatchNorm);
      const std::string a1 = b.op(n + ".act1", LayerOp::Relu);
      b.conv(n + ".conv1", c_out, 3, stride, 1);
      b.op(n + ".bn2", LayerOp::BatchNorm);
      b.op(n + ".act2", LayerOp::Relu);
      const std::string main = b.conv(n + ".conv2", c_out, 3, 1, 1);
      const std::string shortcut =
          (stride != 1 || c != c_out) ? b.conv(n + ".downsample.0", c_out, 1, stride, 0, {a1}) : x;
      b.d.taps.push_back(b.op(n, LayerOp::Add, {main, shortcut}));
  });
  b.op("bn", LayerOp::BatchNorm);
  b.op("bn.act", LayerOp::Relu);
  b.op("avgpool", LayerOp::GlobalAvgPool);
  b.linear("fc", cfg.classes);
}

// A plain CNN: three conv-BN-ReLU units, 2x2 max pools between them, no residual blocks.
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


// ---- torchvision's ImageNet models (torchvision 0.14 state-dict names) --------------------

// torchvision's _make_divisible(v, 8): channels rounded to a multiple of 8, never down by
// more than 10%.
int make_divisible(double v, int divisor = 8) {
  int r = std::max(divisor, int(v + divisor / 2.0) / divisor * divisor);
  if (r < 0.9 * v) r += divisor;
  return r;
}

void conv_bn(Builder& b, const std::string& n, int out, int kernel, int stride, int groups = 1) {
  LayerDesc l = Builder::layer(n + ".0", LayerOp::Conv);
  l.out = out, l.kernel = kernel, l.stride = stride, l.padding = (kernel - 1) / 2, l.groups = groups;
  b.add(std::move(l));
  b.op(n + ".1", LayerOp::BatchNorm);
}

// torchvision.models.ResNet: BasicBlock (resnet18/34) or Bottleneck (resnet50: 1x1, 3x3 with
// the stride, 1x1 to 4x; "ResNet v1.5"). Stages of cfg.width, 2x, 4x, 8x channels. The
// imagenet stem is conv 7x7/2 + 3x3/2 max pool; the cifar stem a 3x3/1 conv and no pool.
// Taps: every block's sum (the aux module's in the paper). ReLUs are named as resnet()'s
// (NAME.act1/.act2/.act3, conv1.act): they hold the activation quantizers.
void torchvision_resnet(Builder& b, const ModelConfig& cfg, const std::vector<int>& blocks, bool bottleneck) {
  const bool cifar = cfg.stem == "cifar";
  b.conv("conv1", cfg.width, cifar ? 3 : 7, cifar ? 1 : 2, cifar ? 1 : 3);
  b.op("bn1", LayerOp::BatchNorm);
  b.op("conv1.act", LayerOp::Relu);
  if (!cifar) {
    LayerDesc l = Builder::layer("maxpool", LayerOp::MaxPool);
    l.kernel = 3, l.stride = 2, l.padding = 1;
    b.add(std::move(l));
  }
  const int expansion = bottleneck ? 4 : 1;
  int c = cfg.width;
  for (size_t stage = 0; stage < blocks.size(); ++stage) {
    const int planes = cfg.width << stage, c_out = planes * expansion;
    for (int i = 0; i < blocks[stage]; ++i) {
      const int stride = (stage > 0 && i == 0) ? 2 : 1;
      const std::string n = "layer" + std::to_string(stage + 1) + "." + std::to_string(i), x = b.last;
      std::string main;
      if (bottleneck) {
        b.conv(n + ".conv1", planes, 1, 1, 0);
        b.op(n + ".bn1", LayerOp::BatchNorm);
        b.op(n + ".act1", LayerOp::Relu);
        b.conv(n + ".conv2", planes, 3, stride, 1);
        b.op(n + ".bn2", LayerOp::BatchNorm);
        b.op(n + ".act2", LayerOp::Relu);
        b.conv(n + ".conv3", c_out, 1, 1, 0);
        main = b.op(n + ".bn3", LayerOp::BatchNorm);
      } else {
        b.conv(n + ".conv1", planes, 3, stride, 1);
        b.op(n + ".bn1", LayerOp::BatchNorm);
        b.op(n + ".act1", LayerOp::Relu);
        b.conv(n + ".conv2", planes, 3, 1, 1);
        main = b.op(n + ".bn2", LayerOp::BatchNorm);
      }
      std::string shortcut = x;
      if (stride != 1 || c != c_out) {
        b.conv(n + ".downsample.0", c_out, 1, stride, 0, {x});
        shortcut = b.op(n + ".downsample.1", LayerOp::BatchNorm);
      }
      b.d.taps.push_back(b.op(n, LayerOp::Add, {main, shortcut}));
      b.op(n + (bottleneck ? ".act3" : ".act2"), LayerOp::Relu);
      c = c_out;
    }
  }
  b.op("avgpool", LayerOp::GlobalAvgPool);
  b.linear("fc", cfg.classes);
}

// torchvision.models.MobileNetV2: features.0 conv-BN-ReLU6 (stride 2; cifar stem: 1),
// features.1..17 inverted residuals (features.N.conv.{0,1,2,3}: 1x1 expansion, 3x3 depthwise,
// linear 1x1 projection + BN; no expansion layer when t = 1), features.18 1x1 to
// last_channel, dropout 0.2 and classifier.1. A block's residual sum is named features.N.
// Taps: every residual sum and every stage's output (its last block's).
void mobilenet_v2(Builder& b, const ModelConfig& cfg) {
  const double wm = cfg.width_mult;
  const bool cifar = cfg.stem == "cifar";
  int c = make_divisible(32 * wm);
  const int last_channel = make_divisible(1280 * std::max(1.0, wm));
  conv_bn(b, "features.0", c, 3, cifar ? 1 : 2);
  b.op("features.0.2", LayerOp::Relu6);
  struct Stage { int t, c, n, s; };
  const Stage stages[] = {{1, 16, 1, 1}, {6, 24, 2, 2}, {6, 32, 3, 2}, {6, 64, 4, 2},
                          {6, 96, 3, 1}, {6, 160, 3, 2}, {6, 320, 1, 1}};
  int f = 1;
  for (const Stage& st : stages) {
    const int c_out = make_divisible(st.c * wm);
    for (int i = 0; i < st.n; ++i, ++f) {
      const int stride = i == 0 ? st.s : 1, hidden = int(std::lround(c * double(st.t)));
      const std::string n = "features." + std::to_string(f), x = b.last;
      int k = 0;
      auto part = [&] { return n + ".conv." + std::to_string(k++); };
      if (st.t != 1) {
        const std::string p = part();
        conv_bn(b, p, hidden, 1, 1);
        b.op(p + ".2", LayerOp::Relu6);
      }
      const std::string dw = part();
      conv_bn(b, dw, hidden, 3, stride, hidden);
      b.op(dw + ".2", LayerOp::Relu6);
      b.conv(part(), c_out, 1, 1, 0);
      std::string out = b.op(part(), LayerOp::BatchNorm);
      if (stride == 1 && c == c_out) {
        out = b.op(n, LayerOp::Add, {out, x});
        b.d.taps.push_back(out);
      } else if (i + 1 == st.n) {
        b.d.taps.push_back(out);
      }
      c = c_out;
    }
  }
  conv_bn(b, "features." + std::to_string(f), last_channel, 1, 1);
  b.op("features." + std::to_string(f) + ".2", LayerOp::Relu6);
  b.op("avgpool", LayerOp::GlobalAvgPool);
  LayerDesc drop = Builder::layer("classifier.0", LayerOp::Dropout);
  drop.p = 0.2f;
  b.add(std::move(drop));
  b.linear("classifier.1", cfg.classes);
}

// MobileNetV1 (Howard et al. 2017; torchvision has none): features.0 conv 3x3/2 (cifar stem:
// /1) + BN + ReLU, then 13 depthwise-separable blocks features.N = nn.Sequential(dw 3x3, BN,
// ReLU, pw 1x1, BN, ReLU) as features.N.0..5, global pool and a linear "classifier".
// Channels are the paper's times --width-mult, rounded as torchvision's _make_divisible(…, 8).
// ReLU as in the paper. Taps: each stage's output (the last block's second BN per width).
void mobilenet_v1(Builder& b, const ModelConfig& cfg) {
  const bool cifar = cfg.stem == "cifar";
  conv_bn(b, "features.0", make_divisible(32 * cfg.width_mult), 3, cifar ? 1 : 2);
  b.op("features.0.2", LayerOp::Relu);
  const std::pair<int, int> blocks[] = {{64, 1},  {128, 2}, {128, 1}, {256, 2}, {256, 1}, {512, 2}, {512, 1},
                                        {512, 1}, {512, 1}, {512, 1}, {512, 1}, {1024, 2}, {1024, 1}};
  int c = make_divisible(32 * cfg.width_mult);
  for (size_t i = 0; i < std::size(blocks); ++i) {
    const std::string n = "features." + std::to_string(i + 1);
    const int c_out = make_divisible(blocks[i].first * cfg.width_mult);
    LayerDesc dw = Builder::layer(n + ".0", LayerOp::Conv);
    dw.out = c, dw.kernel = 3, dw.stride = blocks[i].second, dw.padding = 1, dw.groups = c;
    b.add(std::move(dw));
    b.op(n + ".1", LayerOp::BatchNorm);
    b.op(n + ".2", LayerOp::Relu);
    b.conv(n + ".3", c_out, 1, 1, 0);
    const std::string out = b.op(n + ".4", LayerOp::BatchNorm);
    if (i + 1 == std::size(blocks) || blocks[i + 1].first != blocks[i].first) b.d.taps.push_back(out);
    b.op(n + ".5", LayerOp::Relu);
    c = c_out;
  }
  b.op("avgpool", LayerOp::GlobalAvgPool);
  b.linear("classifier", cfg.classes);
}

// An image smaller than the model's total stride: some stride-s layer gets a side below s, so
// the side would reach 0 (the padding keeps it at 1, a downsampling that does nothing).
void check_downsampling(const ModelDescription& d, const ModelConfig& cfg) {
  for (const LayerDesc& l : d.layers) {
    if (l.stride < 2 || (l.op != LayerOp::Conv && l.op != LayerOp::MaxPool)) continue;
    const std::vector<int>& x =
        l.input_index[0] < 0 ? std::vector<int>{d.in_channels, d.height, d.width} : d.layers[size_t(l.input_index[0])].shape;
    if (x[1] < l.stride || x[2] < l.stride)
      throw Error("--model " + cfg.name + ": images of " + std::to_string(d.height) + "x" + std::to_string(d.width) +
                  " are too small for the " + cfg.stem + " stem: layer '" + l.name + "' (stride " +
                  std::to_string(l.stride) + ") gets " + std::to_string(x[1]) + "x" + std::to_string(x[2]) +
                  " and its output side would reach 0 (use larger images or --stem cifar)");
  }
}

}  // namespace

std::vector<std::string> torchvision_model_names() {
  return {"resnet18", "resnet34", "resnet50", "mobilenet-v1", "mobilenet-v2"};
}

bool is_torchvision_model(const std::string& name) {
  for (const auto& m : torchvision_model_names())
    if (m == name) return true;
  return false;
}

bool is_mobilenet(const std::string& name) { return name.rfind("mobilenet-", 0) == 0; }

std::string size_label(const ModelConfig& cfg) {
  if (!cfg.model_file.empty()) return cfg.model_file;
  if (!is_mobilenet(cfg.name)) return "width " + std::to_string(cfg.width);
  char m[32];
  std::snprintf(m, sizeof m, "width-mult %g", cfg.width_mult);
  return m;
}

ModelDescription describe_model(const ModelConfig& cfg) {
  Builder b;
  b.d.source = "builtin " + cfg.name;
  b.d.in_channels = cfg.in_channels, b.d.height = cfg.height, b.d.width = cfg.width_px, b.d.classes = cfg.classes;
  const std::string& n = cfg.name;
  if (is_torchvision_model(n)) {
    if (cfg.stem != "imagenet" && cfg.stem != "cifar")
      throw Error("--stem " + cfg.stem + ": unknown stem (known: imagenet, cifar)");
    if (!(cfg.width_mult > 0 && cfg.width_mult <= 16))
      throw Error("--width-mult must be in (0, 16], got " + std::to_string(cfg.width_mult));
  }
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
  else if (n == "resnet18")
    torchvision_resnet(b, cfg, {2, 2, 2, 2}, false);
  else if (n == "resnet34")
    torchvision_resnet(b, cfg, {3, 4, 6, 3}, false);
  else if (n == "resnet50")
    torchvision_resnet(b, cfg, {3, 4, 6, 3}, true);
  else if (n == "mobilenet-v2")
    mobilenet_v2(b, cfg);
  else if (n == "mobilenet-v1")
    mobilenet_v1(b, cfg);
  else {
    std::string known;
    for (auto& m : model_names()) known += (known.empty() ? "" : ", ") + m;
    throw Error("--model " + n + ": unknown model (known: " + known + ")");
  }
  infer_shapes(b.d);
  if (is_torchvision_model(n)) check_downsampling(b.d, cfg);
  return std::move(b.d);
}

}  // namespace vkqat::nn

namespace vkqat::nn {

ModelConfig config_from_state_shapes(ModelConfig cfg, const SafeTensors& st) {
  if (!is_torchvision_model(cfg.name)) return cfg;
  const std::string file = st.source.empty() ? "checkpoint" : st.source;
  const bool resnet = !is_mobilenet(cfg.name);
  const std::string first = resnet ? "conv1.weight" : "features.0.0.weight";
  const std::string last = resnet ? "fc.weight" : cfg.name == "mobilenet-v2" ? "classifier.1.weight" : "classifier.weight";
  auto shape_of = [&](const std::string& name, size_t dims) {
    if (!st.has(name))
      throw Error(file + ": tensor '" + name + "' is missing (model " + cfg.name + ": a state dict of another model?)");
    const std::vector<int64_t>& s = st.at(name).shape;
    if (s.size() != dims || s[0] < 1 || s[0] > 65536 || s[1] < 1 || s[1] > 65536) {
      std::string got;
      for (int64_t v : s) got += (got.empty() ? "" : ",") + std::to_string(v);
      throw Error(file + ": tensor '" + name + "' has shape [" + got + "], model " + cfg.name + " expects a " +
                  std::to_string(dims) + "-d weight");
    }
    return s;
  };
  const std::vector<int64_t> w0 = shape_of(first, 4), fc = shape_of(last, 2);
  cfg.in_channels = int(w0[1]);
  cfg.classes = int(fc[0]);
  if (resnet) {
    cfg.width = int(w0[0]);
    cfg.stem = w0[2] == 3 ? "cifar" : "imagenet";
    return cfg;
  }
  auto matches = [&](double wm) {
    ModelConfig c = cfg;
    c.width_mult = wm;
    if (make_divisible(32 * wm) != w0[0]) return false;
    try {
      for (const auto& [name, shape] : state_shapes(describe_model(c)))
        if (!st.has(name) || st.at(name).shape != std::vector<int64_t>(shape.begin(), shape.end())) return false;
    } catch (const Error&) {  // e.g. images too small for this width's stem: not this one
      return false;
    }
    return true;
  };
  if (matches(cfg.width_mult)) return cfg;
  for (int k = 1; k <= 400; ++k)
    if (matches(k / 100.0)) {
      cfg.width_mult = k / 100.0;
      return cfg;
    }
  return cfg;
}

}  // namespace vkqat::nn

// vkqat model show NAME|FILE: the layer table of a built-in model or a JSON model description
// (nn/model/model_desc.h): name, op, output shape, parameters, FLOPs and the quantizer the
// quantization flags would give each layer.
#include <cstdio>
#include <filesystem>

#include "backend/error.h"
#include "commands.h"
#include "nn/model/model_builders.h"
#include "quant/policy.h"

namespace vkqat::cli {

namespace {

struct ModelShowArgs {
  std::string what;
  nn::ModelConfig model;
  int wbits = 32, abits = 32;
  std::string quantizer = "cgpact", wquant, aquant, bits_config;
  int edge_bits = 8;
};

std::string with_bits(const std::string& method, int bits) {
  return bits >= 32 ? "-" : method + " " + std::to_string(bits) + "-bit";
}

// The quantizer column, as quant::make_quant_policy decides (METHODS.md section 5): weights of
// the conv reading the image and of the last linear at --edge-bits, activation quantizers where
// the net has a ReLU (and on the classifier's input), --bits-config overriding per layer.
std::string quantizer_of(const nn::ModelDescription& d, size_t i, const quant::QuantConfig& q) {
  const nn::LayerDesc& l = d.layers[i];
  auto override_bits = [&](const std::string& name, const char* key, int bits) {
    if (q.bits_config.contains(name) && q.bits_config[name].contains(key) && q.bits_config[name][key].is_number_integer())
      return q.bits_config[name][key].get<int>();
    return bits;
  };
  const bool edge = (l.op == nn::LayerOp::Conv && l.input_index[0] < 0) || i + 1 == d.layers.size();
  switch (l.op) {
    case nn::LayerOp::Conv:
    case nn::LayerOp::Linear: {
      const int wb = q.wbits >= 32 ? 32 : override_bits(l.name, "wbits", edge ? q.edge_bits : q.wbits);
      std::string s = "w: " + with_bits(q.wquant, wb);
      if (l.op == nn::LayerOp::Linear && i + 1 == d.layers.size())
        s += ", in: " + with_bits(q.aquant, q.abits >= 32 ? 32 : override_bits(l.name + ".act", "abits", q.abits));
      return s;
    }
    case nn::LayerOp::Relu:
    case nn::LayerOp::Relu6:
      return with_bits(q.aquant, q.abits >= 32 ? 32 : override_bits(l.name, "abits", q.abits));
    default:
      return "";
  }
}

std::string human(double v) {
  char buf[32];
  if (v >= 1e9)
    std::snprintf(buf, sizeof buf, "%.2fG", v / 1e9);
  else if (v >= 1e6)
    std::snprintf(buf, sizeof buf, "%.2fM", v / 1e6);
  else if (v >= 1e3)
    std::snprintf(buf, sizeof buf, "%.1fk", v / 1e3);
  else
    std::snprintf(buf, sizeof buf, "%.0f", v);
  return buf;
}

int show_model(const ModelShowArgs& a) {
  nn::ModelDescription d;
  bool builtin = false;
  for (const auto& n : nn::model_names()) builtin = builtin || n == a.what;
  if (builtin) {
    nn::ModelConfig mc = a.model;
    mc.name = a.what;
    d = nn::describe_model(mc);
  } else {
    std::error_code ec;
    if (!std::filesystem::is_regular_file(a.what, ec)) {
      std::string known;
      for (const auto& n : nn::model_names()) known += (known.empty() ? "" : ", ") + n;
      throw Error("model show " + a.what + ": neither a built-in model (" + known + ") nor a readable file");
    }
    d = nn::load_model_description(a.what);
  }
  quant::QuantConfig q;
  q.apply_preset(a.quantizer, a.wquant, a.aquant);
  q.wbits = a.wbits, q.abits = a.abits, q.edge_bits = a.edge_bits;
  if (!a.bits_config.empty()) {
    q.bits_config = quant::load_bits_config(a.bits_config);
    q.bits_config_source = "--bits-config " + a.bits_config;
  }
  q.validate();
  std::printf("%s: input [%d,%d,%d], %d classes\n", d.source.c_str(), d.in_channels, d.height, d.width, d.classes);
  size_t wn = 4;
  for (const auto& l : d.layers) wn = std::max(wn, l.name.size());
  std::printf("%-*s  %-9s  %-14s  %10s  %10s  %s\n", int(wn), "name", "op", "output", "params", "FLOPs", "quantizer");
  for (size_t i = 0; i < d.layers.size(); ++i) {
    const auto& l = d.layers[i];
    std::string op = nn::layer_op_name(l.op);
    if (l.op == nn::LayerOp::Conv && l.groups > 1) op = l.groups == l.out ? "conv dw" : "conv g" + std::to_string(l.groups);
    std::printf("%-*s  %-9s  %-14s  %10s  %10s  %s\n", int(wn), l.name.c_str(), op.c_str(), nn::dims_str(l.shape).c_str(),
                l.params ? std::to_string(l.params).c_str() : "-", human(l.flops).c_str(), quantizer_of(d, i, q).c_str());
  }
  std::printf("total: %zu layers, %lld parameters, %s FLOPs per image (forward)\n", d.layers.size(),
              static_cast<long long>(d.parameter_count()), human(d.flops()).c_str());
  if (!d.taps.empty()) {
    std::string taps;
    for (const auto& t : d.taps) taps += (taps.empty() ? "" : ", ") + t;
    std::printf("aux taps: %s\n", taps.c_str());
  }
  return 0;
}

}  // namespace

void add_model_command(CLI::App& app, Actions& actions) {
  auto* model = app.add_subcommand("model", "model descriptions");
  model->require_subcommand(1);
  auto a = std::make_shared<ModelShowArgs>();
  auto* show = model->add_subcommand("show", "layer table of a built-in model or a JSON model description");
  show->add_option("model", a->what, "resnet20 | resnet32 | resnet56 | preact-resnet20 | plain-cnn | resnet18 | resnet34 | resnet50 | mobilenet-v1 | mobilenet-v2 | FILE.json")->required();
  show->add_option("--width", a->model.width, "built-in models: channels of the first stage")->capture_default_str()->check(CLI::Range(1, 1024));
  show->add_option("--width-mult", a->model.width_mult, "mobilenet-v1/v2: channel multiplier")->capture_default_str()->check(CLI::Range(0.01, 16.0));
  show->add_option("--stem", a->model.stem, "resnet18/34/50, mobilenets: imagenet | cifar (3x3 stride 1, no max pool)")->capture_default_str()->check(CLI::IsMember({"imagenet", "cifar"}));
  show->add_option("--in-channels", a->model.in_channels, "built-in models: image channels")->capture_default_str()->check(CLI::Range(1, 4096));
  show->add_option("--height", a->model.height, "built-in models: image height")->capture_default_str()->check(CLI::Range(1, 16384));
  show->add_option("--image-width", a->model.width_px, "built-in models: image width")->capture_default_str()->check(CLI::Range(1, 16384));
  show->add_option("--classes", a->model.classes, "built-in models: classes")->capture_default_str()->check(CLI::Range(2, 65536));
  show->add_option("--wbits", a->wbits, "weight bits (32 = full precision)")->capture_default_str();
  show->add_option("--abits", a->abits, "activation bits (32 = full precision)")->capture_default_str();
  show->add_option("--quantizer", a->quantizer, "preset pair, as vkqat train")->capture_default_str();
  show->add_option("--wquant", a->wquant, "weight quantizer, as vkqat train");
  show->add_option("--aquant", a->aquant, "activation quantizer, as vkqat train");
  show->add_option("--edge-bits", a->edge_bits, "weight bits of the first conv and last linear")->capture_default_str();
  show->add_option("--bits-config", a->bits_config, "per-layer bits, as vkqat train");
  show->callback([&actions, a] { actions.push_back([a] { return show_model(*a); }); });
}

}  // namespace vkqat::cli

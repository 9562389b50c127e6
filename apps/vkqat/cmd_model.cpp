// vkqat model show NAME|FILE: the layer table of a built-in model or a JSON model description
// (nn/model/model_desc.h): name, op, output shape, parameters, FLOPs and the quantizer the
// quantization policy gives each layer.
#include <cstdio>
#include <filesystem>
#include <map>

#include "backend/error.h"
#include "commands.h"
#include "nn/model/graph_network.h"
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
  bool sat = false, sat_conv = false, per_channel = false, aux = false, no_reuse = false;
  int batch = 0;  // > 0: build the net on the device and report its buffers' memory
};

// The quantizer column: what the quantization policy gives each layer of the net built at
// batch 1 (GraphNetwork::apply_quant_policy, as vkqat train does), so the column shows edge
// bits of the first conv and last linear, --bits-config overrides and the signed "LAYER.act"
// sites GraphNetwork places on linear bottlenecks, not the flags' rules.
struct LayerQuantizers {
  std::map<std::string, std::string> weight, act;  // layer name -> describe(); act site name -> describe()
};

nn::ModelConfig build_config(const nn::ModelDescription& d, const ModelShowArgs& a, bool builtin) {
  nn::ModelConfig mc = a.model;
  if (builtin)
    mc.name = a.what;
  else
    mc.model_file = std::filesystem::absolute(a.what).string();
  mc.in_channels = d.in_channels, mc.height = d.height, mc.width_px = d.width, mc.classes = d.classes;
  return mc;
}

LayerQuantizers ask_policy(const nn::ModelDescription& d, const ModelShowArgs& a, bool builtin, const quant::QuantConfig& q) {
  LayerQuantizers out;
  if (!q.any()) return out;
  Context ctx;
  nn::GraphNetwork net(ctx, d, build_config(d, a, builtin), 1);
  net.init(0);
  net.apply_quant_policy(*quant::make_quant_policy(q));
  const nn::QuantSites sites = net.quant_sites();
  for (const nn::WeightSite& w : sites.weights)
    if (w.quant) out.weight[w.name] = w.quant->describe();
  for (const nn::ActSite& s : sites.acts)
    if (s.quant) out.act[s.name] = s.quant->describe();
  return out;
}

std::string quantizer_of(const nn::ModelDescription& d, const nn::LayerDesc& l, const LayerQuantizers& lq) {
  auto get = [](const std::map<std::string, std::string>& m, const std::string& k) {
    auto it = m.find(k);
    return it == m.end() ? std::string("-") : it->second;
  };
  switch (l.op) {
    case nn::LayerOp::Conv:
    case nn::LayerOp::Linear: {
      std::string s = "w: " + get(lq.weight, l.name);
      if (l.op == nn::LayerOp::Linear && lq.act.count(l.name + ".act")) s += ", in: " + lq.act.at(l.name + ".act");
      return s;
    }
    case nn::LayerOp::Relu:
    case nn::LayerOp::Relu6:
      return get(lq.act, l.name);
    default:  // a linear bottleneck's output (batch norm or add): its signed site, unless a layer has that name
      return lq.act.count(l.name + ".act") && d.index_of(l.name + ".act") < 0 ? "out: " + lq.act.at(l.name + ".act") : "";
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

// The device memory GraphNetwork's buffers take for a batch (parameters, activations,
// gradients, quantizer state; with --aux the aux module's too): the allocator's bytes in use
// once built, its peak while building, and the device blocks holding them; for a training
// net and for one built for forward only (evaluation).
void print_device_memory(const nn::ModelDescription& d, const ModelShowArgs& a, bool builtin, const quant::QuantConfig& q) {
  const std::string what =
      std::string(q.any() ? "quantized" : "FP32") + (a.aux ? " + aux" : "") + (a.no_reuse ? ", no reuse" : "");
  for (bool forward_only : {false, true}) {
    Context ctx;
    const MemoryStats before = ctx.allocator().stats();
    nn::ModelConfig mc = build_config(d, a, builtin);
    mc.forward_only = forward_only;
    nn::GraphNetwork net(ctx, d, mc, a.batch, /*reuse_buffers=*/!a.no_reuse);
    if (q.any()) net.apply_quant_policy(*quant::make_quant_policy(q));
    std::unique_ptr<nn::AuxiliaryHead> aux;
    if (a.aux) aux = quant::quant_plugins().aux(ctx, net);
    const MemoryStats after = ctx.allocator().stats();
    const double mib = 1 << 20;
    std::printf("device memory at batch %d (GraphNetwork, %s, %s): %.2f MiB in %llu buffers, of which the shared pool "
                "%.2f MiB (lower bound %.2f; peak while building %.2f MiB, device blocks %.2f MiB)\n",
                a.batch, what.c_str(), forward_only ? "forward only" : "training",
                double(after.used_bytes - before.used_bytes) / mib,
                static_cast<unsigned long long>(after.live_buffers - before.live_buffers), double(net.pool_bytes()) / mib,
                double(net.pool_lower_bound()) / mib,
                double(after.peak_used_bytes - before.used_bytes) / mib, double(after.block_bytes - before.block_bytes) / mib);
  }
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
  q.sat = a.sat, q.sat_conv = a.sat_conv, q.per_channel = a.per_channel;
  if (!a.bits_config.empty()) {
    q.bits_config = quant::load_bits_config(a.bits_config);
    q.bits_config_source = "--bits-config " + a.bits_config;
  }
  q.validate();
  const LayerQuantizers lq = ask_policy(d, a, builtin, q);
  std::printf("%s: input [%d,%d,%d], %d classes\n", d.source.c_str(), d.in_channels, d.height, d.width, d.classes);
  size_t wn = 4;
  for (const auto& l : d.layers) wn = std::max(wn, l.name.size());
  std::printf("%-*s  %-9s  %-14s  %10s  %10s  %s\n", int(wn), "name", "op", "output", "params", "FLOPs", "quantizer");
  for (size_t i = 0; i < d.layers.size(); ++i) {
    const auto& l = d.layers[i];
    std::string op = nn::layer_op_name(l.op);
    if (l.op == nn::LayerOp::Conv && l.groups > 1) op = l.groups == l.out ? "conv dw" : "conv g" + std::to_string(l.groups);
    std::printf("%-*s  %-9s  %-14s  %10s  %10s  %s\n", int(wn), l.name.c_str(), op.c_str(), nn::dims_str(l.shape).c_str(),
                l.params ? std::to_string(l.params).c_str() : "-", human(l.flops).c_str(), quantizer_of(d, l, lq).c_str());
  }
  std::printf("total: %zu layers, %lld parameters, %s FLOPs per image (forward)\n", d.layers.size(),
              static_cast<long long>(d.parameter_count()), human(d.flops()).c_str());
  if (!d.taps.empty()) {
    std::string taps;
    for (const auto& t : d.taps) taps += (taps.empty() ? "" : ", ") + t;
    std::printf("aux taps: %s\n", taps.c_str());
  }
  if (a.batch > 0) print_device_memory(d, a, builtin, q);
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
  show->add_flag("--sat", a->sat, "SAT's rescale of the last linear, as vkqat train");
  show->add_flag("--sat-conv", a->sat_conv, "SAT's rescale of every conv, as vkqat train");
  show->add_flag("--per-channel", a->per_channel, "per-channel weight scales, as vkqat train");
  show->add_option("--batch", a->batch, "also build the net on the device and print the memory its buffers take at this batch")
      ->check(CLI::Range(1, 65536));
  show->add_flag("--aux", a->aux, "with --batch: also build the aux module on the net's taps, as vkqat train --aux");
  show->add_flag("--no-reuse", a->no_reuse, "with --batch: every activation and gradient buffer its own (for comparison)");
  show->callback([&actions, a] { actions.push_back([a] { return show_model(*a); }); });
}

}  // namespace vkqat::cli

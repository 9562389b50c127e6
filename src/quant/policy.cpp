#include "quant/policy.h"

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "backend/error.h"
#include "nn/json_number.h"
#include "nn/train/trainer.h"
#include "quant/aux_module.h"
#include "quant/registry.h"
#include "quant/sat.h"

namespace vkqat::quant {
namespace {
using nn::ActQuantizer;
using nn::LayerRole;
using nn::NamedTensors;
using nn::Parameter;
using nn::WeightQuantizer;

// ---- weights -------------------------------------------------------------------------
// SAT's rescale W* = Q(W) / sqrt(n Var[Q(W)]), around an optional quantizer.
class SatWeight : public WeightQuantizer {
 public:
  SatWeight(Context& ctx, const std::vector<int>& shape, int64_t n, std::unique_ptr<WeightQuantizer> inner)
      : n_(n), inner_(std::move(inner)), stats_(ctx, {2}), scratch_(make_quant_scratch(ctx, shape)) {
    if (inner_) q_ = Tensor(ctx, shape), dq_ = Tensor(ctx, shape);
  }
  void forward(Recording& rec, const Tensor& w, Tensor& wq, bool train) override {
    if (inner_) inner_->forward(rec, w, q_, train);
    sat_forward(rec, inner_ ? q_ : w, wq, stats_, scratch_, n_);
  }
  void backward(Recording& rec, const Tensor& w, const Tensor& dwq, Tensor& dw) override {
    if (!inner_) return sat_backward(rec, stats_, dwq, dw, false);
    sat_backward(rec, stats_, dwq, dq_, false);
    inner_->backward(rec, w, dq_, dw);
  }
  std::vector<Parameter*> parameters() override { return inner_ ? inner_->parameters() : std::vector<Parameter*>{}; }
  NamedTensors state() override { return inner_ ? inner_->state() : NamedTensors{}; }
  Kind kind() const override {
    Kind k = inner_ ? inner_->kind() : Kind{};
    k.sat = true;
    return k;
  }
  // The inner grid times the factor (stats_[0]), when the inner step is a constant.
  std::optional<nn::Grid> grid() const override {
    auto g = inner_ ? inner_->grid() : std::nullopt;
    if (!g || g->scale) return std::nullopt;
    return nn::Grid{&stats_, g->mul};
  }

 private:
  int64_t n_;
  std::unique_ptr<WeightQuantizer> inner_;
  Tensor stats_, scratch_, q_, dq_;
};

// ---- the policy ----------------------------------------------------------------------
class Policy : public nn::QuantPolicy {
 public:
  explicit Policy(const QuantConfig& cfg) : cfg_(cfg) {}

  std::unique_ptr<WeightQuantizer> weight(Context& ctx, const std::string& layer, const Tensor& w,
                                          LayerRole role) override {
    const std::vector<int>& shape = w.shape();
    int bits = role == LayerRole::Middle ? cfg_.wbits : (cfg_.wbits == 32 ? 32 : cfg_.edge_bits);
    bits = override_bits(layer, "wbits", bits);
    std::unique_ptr<WeightQuantizer> q;
    if (bits != 32) {
      check_bits(("bits of " + layer).c_str(), bits);
      q = make_weight(ctx, layer, w, bits);
    }
    const bool rescale = (role == LayerRole::Last && cfg_.sat) || (role != LayerRole::Last && cfg_.sat_conv);
    if (rescale) {
      int64_t n = role == LayerRole::Last ? sat_fc_n(shape) : sat_conv_fan_out(shape);
      q = std::make_unique<SatWeight>(ctx, shape, n, std::move(q));
    }
    return q;
  }

  std::unique_ptr<ActQuantizer> activation(Context& ctx, const std::string& name, const std::vector<int>& shape,
                                           LayerRole consumer) override {
    int bits = override_bits(name, "abits", cfg_.abits);
    if (bits == 32) return nullptr;
    check_bits(("bits of " + name).c_str(), bits);
    return act_quantizer(cfg_.aquant).make(ctx, name, shape, bits, consumer);
  }

  std::unique_ptr<ActQuantizer> signed_activation(Context& ctx, const std::string& name,
                                                  const std::vector<int>& shape) override {
    int bits = override_bits(name, "abits", cfg_.abits);
    if (bits == 32) return nullptr;
    check_bits(("bits of " + name).c_str(), bits);
    const ActQuantizerSpec& spec = act_quantizer(cfg_.aquant);
    if (!spec.make_signed)
      throw Error(name + ": --aquant " + spec.name +
                  " has no signed form for this linear bottleneck (its input can be negative); use --aquant pact|cg-pact|lsq");
    return spec.make_signed(ctx, name, shape, bits);
  }

  void finish() override {
    for (const auto& [name, v] : cfg_.bits_config.items())
      if (!used_.count(name))
        throw Error(cfg_.bits_config_source + ": '" + name + "' names no quantizable layer or activation of this model");
  }

 private:
  int override_bits(const std::string& name, const char* key, int bits) {
    if (!cfg_.bits_config.contains(name)) return bits;
    used_.insert(name);
    const auto& entry = cfg_.bits_config[name];
    if (!entry.contains(key)) return bits;
    const int b = nn::json_int<int>(entry[key], cfg_.bits_config_source + ": " + name + "." + key);
    if (b != 32 && (b < 1 || b > 8))
      throw Error(cfg_.bits_config_source + ": " + name + "." + key + " = " + std::to_string(b) + " (must be 1..8 or 32)");
    return b;
  }

  std::unique_ptr<WeightQuantizer> make_weight(Context& ctx, const std::string& layer, const Tensor& w, int bits) {
    const WeightQuantizerSpec& spec = weight_quantizer(cfg_.wquant);
    if (bits < spec.min_bits)
      throw Error("--wquant " + spec.name + " needs >= " + std::to_string(spec.min_bits) + " bits; " + layer + " gets " +
                  std::to_string(bits));
    return spec.make(ctx, layer, w, bits, cfg_.per_channel);
  }

  QuantConfig cfg_;
  std::set<std::string> used_;
};

}  // namespace

std::vector<std::string> quantizer_names() {
  std::vector<std::string> names;
  for (const QuantizerPreset& p : quantizer_presets()) names.push_back(p.name);
  return names;
}

void QuantConfig::apply_preset(const std::string& preset, const std::string& wquant_flag, const std::string& aquant_flag) {
  const QuantizerPreset* p = find_preset(preset);
  if (!p) {
    std::string known;
    for (auto& n : quantizer_names()) known += (known.empty() ? "" : ", ") + n;
    throw Error("--quantizer " + preset + ": unknown (known: " + known + "; or pick each half with --wquant / --aquant)");
  }
  wquant = wquant_flag.empty() ? p->wquant : wquant_flag;
  aquant = aquant_flag.empty() ? p->aquant : aquant_flag;
  weight_quantizer(wquant);  // unknown names: an error naming the flag now
  act_quantizer(aquant);
  quantizer = "custom";
  for (const QuantizerPreset& q : quantizer_presets())
    if (q.wquant == wquant && q.aquant == aquant) quantizer = q.name;
}

void QuantConfig::validate() const {
  auto ok = [](int b) { return b == 32 || (b >= 1 && b <= 8); };
  if (!ok(wbits)) throw Error("--wbits " + std::to_string(wbits) + ": must be 1..8, or 32 for full precision");
  if (!ok(abits)) throw Error("--abits " + std::to_string(abits) + ": must be 1..8, or 32 for full precision");
  if (!ok(edge_bits)) throw Error("--edge-bits " + std::to_string(edge_bits) + ": must be 1..8, or 32");
  if (quantizer != "custom" && !find_preset(quantizer)) {
    std::string known;
    for (auto& n : quantizer_names()) known += (known.empty() ? "" : ", ") + n;
    throw Error("--quantizer " + quantizer + ": unknown (known: " + known + ")");
  }
  const WeightQuantizerSpec& w = weight_quantizer(wquant);
  act_quantizer(aquant);
  if (const QuantizerPreset* p = find_preset(quantizer); p && (p->wquant != wquant || p->aquant != aquant))
    throw Error("quantization config: --quantizer " + quantizer + " means --wquant " + p->wquant + " --aquant " +
                p->aquant + ", but it names " + wquant + " / " + aquant + " (set both through apply_preset)");
  if (wbits != 32 && (wbits < w.min_bits || edge_bits < w.min_bits))
    throw Error("--wquant " + wquant + " needs weight bits >= " + std::to_string(w.min_bits) +
                " (symmetric 1-bit has no levels)");
  if (per_channel && !w.per_channel) {
    std::string supported;
    for (const WeightQuantizerSpec& s : registry().weights)
      if (s.per_channel) supported += (supported.empty() ? "" : ", ") + s.name;
    throw Error("--per-channel: --wquant " + wquant + " has one scale per tensor (per channel: " + supported + ")");
  }
}

nlohmann::json QuantConfig::to_json() const {
  return {{"quantizer", quantizer}, {"wquant", wquant}, {"aquant", aquant},           {"per_channel", per_channel},
          {"wbits", wbits},         {"abits", abits},   {"edge_bits", edge_bits},     {"sat", sat},
          {"sat_conv", sat_conv},   {"bits_config", bits_config}};
}

nlohmann::json load_bits_config(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) throw Error("--bits-config " + path + ": is a directory, not a JSON file");
  std::ifstream in(path);
  if (!in) throw Error("--bits-config " + path + ": cannot open");
  nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
  if (j.is_discarded() || !j.is_object())
    throw Error("--bits-config " + path + ": not a JSON object of {\"layer\": {\"wbits\": K, \"abits\": K}}");
  for (const auto& [name, v] : j.items()) {
    if (!v.is_object()) throw Error("--bits-config " + path + ": entry '" + name + "' is not an object");
    for (const auto& [k, b] : v.items())
      if ((k != "wbits" && k != "abits") || !b.is_number_integer())
        throw Error("--bits-config " + path + ": entry '" + name + "' has '" + k + "'; expected integer wbits/abits");
  }
  return j;
}

std::unique_ptr<nn::QuantPolicy> make_quant_policy(const QuantConfig& cfg) {
  cfg.validate();
  return std::make_unique<Policy>(cfg);
}

QuantConfig quant_config_from_json(const nlohmann::json& j) {
  QuantConfig c;
  try {
    c.quantizer = j.at("quantizer");
    // Checkpoints from before --wquant / --aquant name only the preset.
    const QuantizerPreset* p = find_preset(c.quantizer);
    if (!j.contains("wquant") && !p) throw Error("quantization config: unknown quantizer '" + c.quantizer + "'");
    c.wquant = j.contains("wquant") ? j.at("wquant").get<std::string>() : p->wquant;
    c.aquant = j.contains("aquant") ? j.at("aquant").get<std::string>() : p->aquant;
    c.per_channel = j.value("per_channel", false);
    c.wbits = nn::json_int<int>(j.at("wbits"), "wbits");
    c.abits = nn::json_int<int>(j.at("abits"), "abits");
    c.edge_bits = nn::json_int<int>(j.at("edge_bits"), "edge_bits");
    c.sat = j.at("sat");
    c.sat_conv = j.at("sat_conv");
    c.bits_config = j.value("bits_config", nlohmann::json::object());
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("quantization config: ") + e.what());
  }
  return c;
}

void use_cgpact_sat_aux(nn::TrainConfig& c, int bits) {
  QuantConfig q;
  q.wbits = q.abits = bits;
  q.sat = true;
  c.wbits = c.abits = bits;
  c.quant = q.to_json();
  c.aux = true;
}

nn::QuantPlugins quant_plugins() {
  nn::QuantPlugins p;
  p.policy = [](const nlohmann::json& j) { return make_quant_policy(quant_config_from_json(j)); };
  p.aux = [](Context& ctx, nn::Network& net) -> std::unique_ptr<nn::AuxiliaryHead> {
    return std::make_unique<AuxModule>(ctx, net);
  };
  return p;
}

}  // namespace vkqat::quant

#include "quant/policy.h"

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "backend/error.h"
#include "nn/json_number.h"
#include "nn/ops/relu.h"
#include "quant/aux_module.h"
#include "quant/dorefa.h"
#include "quant/lsq.h"
#include "quant/minmax.h"
#include "quant/pact.h"
#include "quant/sat.h"

namespace vkqat::quant {
namespace {
using nn::ActQuantizer;
using nn::LayerRole;
using nn::NamedTensors;
using nn::Parameter;
using nn::WeightQuantizer;

std::string bits_str(int bits) { return bits == 32 ? "fp32" : std::to_string(bits) + "-bit"; }

// ---- weights -------------------------------------------------------------------------
class DorefaWeight : public WeightQuantizer {
 public:
  DorefaWeight(Context& ctx, const std::vector<int>& shape, int bits)
      : bits_(bits), stat_(ctx, {1}), scratch_(make_quant_scratch(ctx, shape)) {}
  void forward(Recording& rec, const Tensor& w, Tensor& wq, bool) override {
    dorefa_weight_forward(rec, w, wq, stat_, scratch_, bits_);
  }
  void backward(Recording& rec, const Tensor& w, const Tensor& dwq, Tensor& dw) override {
    dorefa_weight_backward(rec, w, stat_, dwq, dw, false, bits_);
  }
  Kind kind() const override { return {"dorefa", bits_, false}; }
  // k >= 2: wq = (2 level - n) / n; k = 1: wq = +-mean|w| (the stat).
  std::optional<nn::Grid> grid() const override {
    if (bits_ == 1) return nn::Grid{&stat_, 1.f};
    return nn::Grid{nullptr, levels(bits_).inv_n};
  }

 private:
  int bits_;
  Tensor stat_, scratch_;
};

class LsqWeight : public WeightQuantizer {
 public:
  LsqWeight(Context& ctx, const std::string& layer, const Tensor& w, int bits) {
    cfg_.bits = bits;
    cfg_.target = QuantTarget::Weight;
    step_ = Parameter(ctx, layer + ".weight_step", {int(lsq_step_count(cfg_, w.shape()))}, false);
    scratch_ = make_quant_scratch(ctx, w.shape(), quant_scope(cfg_.target, cfg_.per_channel));
    Recording init(ctx);  // s = 2 mean|w| / sqrt(Qp) from the initial weights
    lsq_init_step(init, w, step_.value, scratch_, cfg_);
    init.run();
  }
  void forward(Recording& rec, const Tensor& w, Tensor& wq, bool) override { lsq_forward(rec, w, step_.value, wq, cfg_); }
  void backward(Recording& rec, const Tensor& w, const Tensor& dwq, Tensor& dw) override {
    lsq_backward(rec, w, step_.value, dwq, dw, false, step_.grad, false, scratch_, cfg_);
  }
  std::vector<Parameter*> parameters() override { return {&step_}; }
  Kind kind() const override { return {"lsq", cfg_.bits, false}; }

 private:
  LsqConfig cfg_;
  Parameter step_;
  Tensor scratch_;
};

class MinMaxWeight : public WeightQuantizer {
 public:
  MinMaxWeight(Context& ctx, const std::vector<int>& shape, int bits) {
    cfg_.bits = bits;
    cfg_.per_channel = true;
    stat_ = Tensor(ctx, {int(minmax_channel_count(QuantTarget::Weight, cfg_, shape))});
    scratch_ = make_quant_scratch(ctx, shape, quant_scope(QuantTarget::Weight, true));
  }
  void forward(Recording& rec, const Tensor& w, Tensor& wq, bool) override {
    minmax_weight_forward(rec, w, wq, stat_, scratch_, cfg_);
  }
  void backward(Recording& rec, const Tensor&, const Tensor& dwq, Tensor& dw) override {
    minmax_weight_backward(rec, dwq, dw, false);
  }
  Kind kind() const override { return {"minmax", cfg_.bits, false}; }

 private:
  MinMaxConfig cfg_;
  Tensor stat_, scratch_;
};

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

// ---- activations ---------------------------------------------------------------------
class PactAct : public ActQuantizer {
 public:
  PactAct(Context& ctx, const std::string& name, const std::vector<int>& shape, int bits, float alpha0,
          PactGradient g)
      : bits_(bits), gradient_(g), alpha_(ctx, name + ".alpha", {1}, false), scratch_(make_quant_scratch(ctx, shape)) {
    alpha_.value.upload({alpha0});
  }
  void forward(Recording& rec, const Tensor& x, Tensor& y, bool) override { pact_forward(rec, x, alpha_.value, y, bits_); }
  void backward(Recording& rec, const Tensor& x, const Tensor& dy, Tensor& dx, bool acc) override {
    pact_backward(rec, x, alpha_.value, dy, dx, acc, alpha_.grad, false, scratch_, bits_, gradient_);
  }
  std::optional<UniformClip> uniform_clip() const override {
    const Levels L = levels(bits_);
    return UniformClip{&alpha_.value, L.n, L.inv_n, gradient_ == PactGradient::Calibrated};
  }
  void merge_clip_grad(Recording& rec, const Tensor& partials) override {
    pact_merge_clip_grad(rec, partials, alpha_.grad, false);
  }
  std::vector<Parameter*> parameters() override { return {&alpha_}; }
  std::string describe() const override {
    return std::string(gradient_ == PactGradient::Calibrated ? "cg-pact " : "pact ") + bits_str(bits_);
  }

 private:
  int bits_;
  PactGradient gradient_;
  Parameter alpha_;
  Tensor scratch_;
};

class DorefaAct : public ActQuantizer {
 public:
  explicit DorefaAct(int bits) : bits_(bits) {}
  void forward(Recording& rec, const Tensor& x, Tensor& y, bool) override { dorefa_act_forward(rec, x, y, bits_); }
  void backward(Recording& rec, const Tensor& x, const Tensor& dy, Tensor& dx, bool acc) override {
    dorefa_act_backward(rec, x, dy, dx, acc);
  }
  std::string describe() const override { return "dorefa-act " + bits_str(bits_); }
  std::optional<nn::Grid> grid() const override { return nn::Grid{nullptr, levels(bits_).inv_n}; }

 private:
  int bits_;
};

class LsqAct : public ActQuantizer {
 public:
  LsqAct(Context& ctx, const std::string& name, const std::vector<int>& shape, int bits) {
    cfg_.bits = bits;
    cfg_.target = QuantTarget::Activation;
    step_ = Parameter(ctx, name + ".step", {int(lsq_step_count(cfg_, shape))}, false);
    step_.value.upload(std::vector<float>(size_t(step_.value.numel()), 1.f));  // replaced by the data init
    scratch_ = make_quant_scratch(ctx, shape, quant_scope(cfg_.target, cfg_.per_channel));
  }
  void forward(Recording& rec, const Tensor& x, Tensor& y, bool) override {
    if (data_init_) lsq_init_step(rec, x, step_.value, scratch_, cfg_);
    lsq_forward(rec, x, step_.value, y, cfg_);
  }
  void backward(Recording& rec, const Tensor& x, const Tensor& dy, Tensor& dx, bool acc) override {
    lsq_backward(rec, x, step_.value, dy, dx, acc, step_.grad, false, scratch_, cfg_);
  }
  std::vector<Parameter*> parameters() override { return {&step_}; }
  std::string describe() const override { return "lsq-act " + bits_str(cfg_.bits); }
  bool wants_data_init() const override { return true; }
  void set_data_init(bool on) override { data_init_ = on; }

 private:
  LsqConfig cfg_;
  Parameter step_;
  Tensor scratch_;
  bool data_init_ = false;
};

// ReLU first (the range then starts at 0, as the full-precision net's activation does).
class MinMaxAct : public ActQuantizer {
 public:
  MinMaxAct(Context& ctx, const std::string& name, const std::vector<int>& shape, int bits)
      : name_(name), relu_(ctx, shape), d_relu_(ctx, shape), range_(make_minmax_range(ctx, 1)),
        scratch_(make_quant_scratch(ctx, shape)) {
    cfg_.bits = bits;
  }
  void forward(Recording& rec, const Tensor& x, Tensor& y, bool train) override {
    nn::relu_forward(rec, x, relu_);
    minmax_act_forward(rec, relu_, y, range_, scratch_, cfg_, train);
  }
  void backward(Recording& rec, const Tensor& x, const Tensor& dy, Tensor& dx, bool acc) override {
    minmax_act_backward(rec, relu_, range_, dy, d_relu_, false, cfg_);
    nn::relu_backward(rec, x, d_relu_, dx, acc);
  }
  NamedTensors state() override { return {{name_ + ".range", &range_}}; }
  std::string describe() const override { return "minmax-act " + bits_str(cfg_.bits); }

 private:
  std::string name_;
  MinMaxConfig cfg_;
  Tensor relu_, d_relu_, range_, scratch_;
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
    const std::string& q = cfg_.quantizer;
    if (q == "cgpact" || q == "dorefa-pact")
      return std::make_unique<PactAct>(ctx, name, shape, bits, consumer == LayerRole::Last ? kPactAlphaFc : kPactAlphaConv,
                                       q == "cgpact" ? PactGradient::Calibrated : PactGradient::Original);
    if (q == "dorefa") return std::make_unique<DorefaAct>(bits);
    if (q == "lsq") return std::make_unique<LsqAct>(ctx, name, shape, bits);
    return std::make_unique<MinMaxAct>(ctx, name, shape, bits);
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
    if (cfg_.quantizer == "minmax") return std::make_unique<MinMaxWeight>(ctx, w.shape(), bits);
    if (cfg_.quantizer == "lsq") return std::make_unique<LsqWeight>(ctx, layer, w, bits);
    return std::make_unique<DorefaWeight>(ctx, w.shape(), bits);
  }

  QuantConfig cfg_;
  std::set<std::string> used_;
};

}  // namespace

std::vector<std::string> quantizer_names() { return {"cgpact", "dorefa-pact", "dorefa", "lsq", "minmax"}; }

void QuantConfig::validate() const {
  auto ok = [](int b) { return b == 32 || (b >= 1 && b <= 8); };
  if (!ok(wbits)) throw Error("--wbits " + std::to_string(wbits) + ": must be 1..8, or 32 for full precision");
  if (!ok(abits)) throw Error("--abits " + std::to_string(abits) + ": must be 1..8, or 32 for full precision");
  if (!ok(edge_bits)) throw Error("--edge-bits " + std::to_string(edge_bits) + ": must be 1..8, or 32");
  auto names = quantizer_names();
  if (std::find(names.begin(), names.end(), quantizer) == names.end()) {
    std::string known;
    for (auto& n : names) known += (known.empty() ? "" : ", ") + n;
    throw Error("--quantizer " + quantizer + ": unknown (known: " + known + ")");
  }
  if ((quantizer == "lsq" || quantizer == "minmax") && (wbits == 1 || edge_bits == 1))
    throw Error("--quantizer " + quantizer + " needs weight bits >= 2 (symmetric 1-bit has no levels)");
}

nlohmann::json QuantConfig::to_json() const {
  return {{"quantizer", quantizer}, {"wbits", wbits},       {"abits", abits},           {"edge_bits", edge_bits},
          {"sat", sat},             {"sat_conv", sat_conv}, {"bits_config", bits_config}};
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

nn::QuantPlugins quant_plugins() {
  nn::QuantPlugins p;
  p.policy = [](const nlohmann::json& j) { return make_quant_policy(quant_config_from_json(j)); };
  p.aux = [](Context& ctx, nn::Network& net) -> std::unique_ptr<nn::AuxiliaryHead> {
    return std::make_unique<AuxModule>(ctx, net);
  };
  return p;
}

}  // namespace vkqat::quant

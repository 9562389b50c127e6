#include "nn/model/network.h"

#include "nn/json_number.h"
#include "backend/error.h"
#include "nn/model/graph_network.h"
#include "nn/model/model_builders.h"

namespace vkqat::nn {

nlohmann::json ModelConfig::to_json() const {
  nlohmann::json j = {{"model", name}, {"width", width}, {"in_channels", in_channels}, {"height", height},
                      {"image_width", width_px}, {"classes", classes}};
  if (!model_file.empty()) j["model_file"] = model_file;
  if (is_torchvision_model(name)) j["width_mult"] = width_mult, j["stem"] = stem;  // older configs: absent
  return j;
}

ModelConfig ModelConfig::from_json(const nlohmann::json& j) {
  ModelConfig c;
  try {
    c.name = j.at("model").get<std::string>();
    c.width = json_int<int>(j.at("width"), "width");
    c.in_channels = json_int<int>(j.at("in_channels"), "in_channels");
    c.height = json_int<int>(j.at("height"), "height");
    c.width_px = json_int<int>(j.at("image_width"), "image_width");
    c.classes = json_int<int>(j.at("classes"), "classes");
    if (j.contains("model_file")) {
      if (!j["model_file"].is_string()) throw Error("'model_file' must be a string");
      c.model_file = j["model_file"].get<std::string>();
    }
    if (j.contains("width_mult")) {
      if (!j["width_mult"].is_number()) throw Error("'width_mult' must be a number");
      c.width_mult = j["width_mult"].get<double>();
    }
    if (j.contains("stem")) {
      if (!j["stem"].is_string()) throw Error("'stem' must be a string");
      c.stem = j["stem"].get<std::string>();
    }
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("model config: ") + e.what());
  } catch (const Error& e) {
    throw Error(std::string("model config: ") + e.what());
  }
  return c;
}

std::vector<std::string> model_names() {
  std::vector<std::string> names{"resnet20", "resnet32", "resnet56", "preact-resnet20", "plain-cnn"};
  for (const auto& n : torchvision_model_names()) names.push_back(n);
  return names;
}

Network::Network(Context& ctx, const ModelConfig& cfg, int batch) : ctx_(ctx), config_(cfg), batch_(batch) {
  input_ = Tensor(ctx, {batch, cfg.in_channels, cfg.height, cfg.width_px});
  logits_ = Tensor(ctx, {batch, cfg.classes});
  d_logits_ = Tensor(ctx, {batch, cfg.classes});
}

void Network::register_conv(Conv2dLayer& c) {
  params_.push_back(&c.weight);
  state_.push_back({c.weight.name, &c.weight.value});
}

void Network::register_bn(BatchNorm2dLayer& b) {
  params_.push_back(&b.gamma);
  params_.push_back(&b.beta);
  state_.push_back({b.gamma.name, &b.gamma.value});
  state_.push_back({b.beta.name, &b.beta.value});
  state_.push_back({b.name + ".running_mean", &b.running_mean});
  state_.push_back({b.name + ".running_var", &b.running_var});
  bn_names_.push_back(b.name);
  bn_layers_.push_back(&b);
}

void Network::register_linear(LinearLayer& l) {
  params_.push_back(&l.weight);
  params_.push_back(&l.bias);
  state_.push_back({l.weight.name, &l.weight.value});
  state_.push_back({l.bias.name, &l.bias.value});
}

void Network::register_quantizer_state(std::vector<Parameter*> params, const NamedTensors& state) {
  for (Parameter* p : params) {
    params_.push_back(p);
    state_.push_back({p->name, &p->value});
  }
  for (const auto& s : state) state_.push_back(s);
}

void Network::register_act_quantizer(ActQuantizer* q) {
  act_quantizers_.push_back(q);
  register_quantizer_state(q->parameters(), q->state());
}

void Network::init(uint64_t seed) {
  InitRng rng(seed);
  init_layers(rng);
}

uint64_t Network::parameter_count() const {
  uint64_t n = 0;
  for (const Parameter* p : params_) n += uint64_t(p->value.numel());
  return n;
}

std::unique_ptr<Network> build_network(Context& ctx, const ModelConfig& cfg, int batch) {
  if (batch < 1) throw Error("--batch-size must be at least 1, got " + std::to_string(batch));
  if (!cfg.model_file.empty())
    return std::make_unique<GraphNetwork>(ctx, load_model_description(cfg.model_file), cfg, batch);
  if (cfg.width < 1 || cfg.width > 1024) throw Error("--width must be in 1..1024, got " + std::to_string(cfg.width));
  if (!is_torchvision_model(cfg.name)) {  // describe_model checks the torchvision models' own way
    if (cfg.classes < 2) throw Error("model needs at least 2 classes, got " + std::to_string(cfg.classes));
    if (cfg.height < 4 || cfg.width_px < 4)
      throw Error("images of " + std::to_string(cfg.height) + "x" + std::to_string(cfg.width_px) + " are too small");
  }
  return std::make_unique<GraphNetwork>(ctx, describe_model(cfg), cfg, batch);
}

}  // namespace vkqat::nn

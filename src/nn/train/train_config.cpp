// TrainConfig <-> JSON (summary.json's "config", the trainer state's metadata).
#include <nlohmann/json.hpp>

#include "backend/error.h"
#include "nn/train/trainer.h"

namespace vkqat::nn {

nlohmann::json TrainConfig::to_json() const {
  return {{"data", data},        {"data_dir", data_dir},       {"model", model.to_json()},
          {"epochs", epochs},    {"batch_size", batch},        {"lr", lr},
          {"momentum", momentum}, {"weight_decay", weight_decay}, {"nesterov", nesterov},
          {"warmup_epochs", warmup_epochs}, {"seed", seed},    {"wbits", wbits},
          {"abits", abits},      {"quant", quant},             {"aux", aux},
          {"aux_weight", aux_weight}, {"lp_weight", lp_weight}, {"init", init},          {"train_limit", train_limit},
          {"test_limit", test_limit}, {"log_every", log_every}, {"keep_checkpoints", keep_checkpoints}};
}

TrainConfig TrainConfig::from_json(const nlohmann::json& j) {
  TrainConfig c;
  try {
    c.data = j.at("data");
    c.data_dir = j.at("data_dir");
    c.model = ModelConfig::from_json(j.at("model"));
    c.epochs = j.at("epochs");
    c.batch = j.at("batch_size");
    c.lr = j.at("lr");
    c.momentum = j.at("momentum");
    c.weight_decay = j.at("weight_decay");
    c.nesterov = j.at("nesterov");
    c.warmup_epochs = j.at("warmup_epochs");
    c.seed = j.at("seed");
    c.wbits = j.at("wbits");
    c.abits = j.at("abits");
    c.quant = j.at("quant");
    c.aux = j.at("aux");
    c.aux_weight = j.at("aux_weight");
    c.lp_weight = j.value("lp_weight", 1.f);
    c.init = j.at("init");
    c.train_limit = j.at("train_limit");
    c.test_limit = j.at("test_limit");
    c.log_every = j.at("log_every");
    c.keep_checkpoints = j.value("keep_checkpoints", 1);
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("training config: ") + e.what());
  }
  return c;
}

}  // namespace vkqat::nn

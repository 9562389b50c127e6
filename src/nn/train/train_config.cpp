// TrainConfig <-> JSON (summary.json's "config", the trainer state's metadata).
#include <nlohmann/json.hpp>

#include "backend/error.h"
#include "nn/json_number.h"
#include "nn/train/trainer.h"

namespace vkqat::nn {

nlohmann::json TrainConfig::to_json() const {
  return {{"data", data},        {"data_dir", data_dir},       {"model", model.to_json()},  {"fc_init", fc_init},
          {"epochs", epochs},    {"batch_size", batch},        {"lr", lr},
          {"momentum", momentum}, {"weight_decay", weight_decay}, {"nesterov", nesterov},
          {"warmup_epochs", warmup_epochs}, {"seed", seed},    {"wbits", wbits},
          {"abits", abits},      {"quant", quant},             {"aux", aux},
          {"aux_weight", aux_weight}, {"lp_weight", lp_weight}, {"init", init},          {"train_limit", train_limit},
          {"test_limit", test_limit}, {"log_every", log_every}, {"keep_checkpoints", keep_checkpoints}, {"data_options", data_options.to_json()},
          {"sync_bn", sync_bn}};
}

TrainConfig TrainConfig::from_json(const nlohmann::json& j) {
  TrainConfig c;
  try {
    c.data = j.at("data");
    c.data_dir = j.at("data_dir");
    c.model = ModelConfig::from_json(j.at("model"));
    c.epochs = json_int<int>(j.at("epochs"), "epochs");
    c.batch = json_int<int>(j.at("batch_size"), "batch_size");
    c.lr = json_float(j.at("lr"), "lr");
    c.momentum = json_float(j.at("momentum"), "momentum");
    c.weight_decay = json_float(j.at("weight_decay"), "weight_decay");
    c.nesterov = j.at("nesterov");
    c.warmup_epochs = json_float(j.at("warmup_epochs"), "warmup_epochs");
    c.seed = json_int<uint64_t>(j.at("seed"), "seed");
    c.wbits = json_int<int>(j.at("wbits"), "wbits");
    c.abits = json_int<int>(j.at("abits"), "abits");
    c.quant = j.at("quant");
    c.aux = j.at("aux");
    c.aux_weight = json_float(j.at("aux_weight"), "aux_weight");
    c.lp_weight = j.contains("lp_weight") ? json_float(j["lp_weight"], "lp_weight") : 1.f;
    c.init = j.at("init");
    c.fc_init = j.value("fc_init", "default");  // absent in runs from before --fc-init
    c.train_limit = json_int<int>(j.at("train_limit"), "train_limit");
    c.test_limit = json_int<int>(j.at("test_limit"), "test_limit");
    c.log_every = json_int<int>(j.at("log_every"), "log_every");
    c.keep_checkpoints = j.contains("keep_checkpoints") ? json_int<int>(j["keep_checkpoints"], "keep_checkpoints") : 1;
    c.data_options = DataOptions::from_json(j.value("data_options", nlohmann::json()));
    c.sync_bn = j.contains("sync_bn") ? j["sync_bn"].get<bool>() : false;
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("training config: ") + e.what());
  } catch (const Error& e) {
    throw Error(std::string("training config: ") + e.what());
  }
  return c;
}

}  // namespace vkqat::nn

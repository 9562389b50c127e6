// The JSON descriptions of a run: checkpoint metadata (model config, quantization config,
// normalization), the trainer state's training config, and a quantization config.
#include <nlohmann/json.hpp>

#include "fuzz_common.h"
#include "nn/train/checkpoint.h"
#include "nn/train/trainer.h"
#include "quant/policy.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  vkqat::nn::SafeTensors st;
  st.source = "fuzz.safetensors";
  st.metadata["vkqat"] = text;
  try {
    const nlohmann::json meta = vkqat::nn::checkpoint_metadata(st);
    // What evaluate_checkpoint / export read after the check must not throw anything else.
    if (meta.contains("model")) vkqat::nn::ModelConfig::from_json(meta["model"]);
    (void)meta.value("aux", false);
    (void)meta.value("quant", nlohmann::json());
  } catch (const vkqat::Error&) {
  }
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded()) return 0;
  try {
    vkqat::nn::TrainConfig::from_json(j);
  } catch (const vkqat::Error&) {
  }
  try {
    vkqat::quant::quant_config_from_json(j).validate();
  } catch (const vkqat::Error&) {
  }
  return 0;
}

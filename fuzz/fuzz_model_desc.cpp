// The JSON model description (--model-file, vkqat model show): parsing, shape inference and
// validation must answer any input with a description or a vkqat::Error.
#include <nlohmann/json.hpp>

#include "fuzz_common.h"
#include "nn/model/model_desc.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = vkqat::fuzz::write_scratch("model.json", data, size);
  try {
    const vkqat::nn::ModelDescription d = vkqat::nn::load_model_description(path);
    // A valid description round-trips through its JSON form to the same layers.
    const vkqat::nn::ModelDescription again = vkqat::nn::parse_model_description(d.to_json(), "round trip");
    if (again.layers.size() != d.layers.size() || again.parameter_count() != d.parameter_count()) __builtin_trap();
  } catch (const vkqat::Error&) {
  }
  return 0;
}

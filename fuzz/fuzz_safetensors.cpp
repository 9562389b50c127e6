// safetensors reader; what it accepts must serialize, read back equal, and survive the
// checkpoint-metadata check.
#include "fuzz_common.h"
#include "nn/safetensors.h"
#include "nn/train/checkpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = vkqat::fuzz::write_scratch("st.safetensors", data, size);
  vkqat::nn::SafeTensors st;
  try {
    st = vkqat::nn::read_safetensors(path);
  } catch (const vkqat::Error&) {
    return 0;
  }
  const std::vector<uint8_t> bytes = vkqat::nn::serialize_safetensors(st);
  const std::string again = vkqat::fuzz::write_scratch("st2.safetensors", bytes.data(), bytes.size());
  const vkqat::nn::SafeTensors back = vkqat::nn::read_safetensors(again);
  if (back.tensors.size() != st.tensors.size() || back.metadata != st.metadata) __builtin_trap();
  for (const auto& [name, t] : st.tensors)
    if (back.at(name).data != t.data || back.at(name).shape != t.shape || back.at(name).dtype != t.dtype)
      __builtin_trap();
  try {
    vkqat::nn::checkpoint_metadata(st);
  } catch (const vkqat::Error&) {
  }
  return 0;
}

// Integer models written by `vkqat export` (safetensors + vkqat_int metadata).
#include "fuzz_common.h"
#include "quant/int_model.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = vkqat::fuzz::write_scratch("int.safetensors", data, size);
  try {
    vkqat::quant::read_int_model(path);
  } catch (const vkqat::Error&) {
  }
  return 0;
}

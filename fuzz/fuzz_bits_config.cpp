// --bits-config files: read, then validated as part of a quantization config.
#include "fuzz_common.h"
#include "quant/policy.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = vkqat::fuzz::write_scratch("bits.json", data, size);
  try {
    vkqat::quant::QuantConfig q;
    q.wbits = q.abits = 4;
    q.bits_config = vkqat::quant::load_bits_config(path);
    q.validate();
    vkqat::quant::quant_config_from_json(q.to_json());
  } catch (const vkqat::Error&) {
  }
  return 0;
}

// RUN_DIR/stats.cbor, the statistics file of `vkqat train --stats-every` (read by vkqat-viz --replay).
#include "fuzz_common.h"
#include "quant/stats_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = vkqat::fuzz::write_scratch("stats.cbor", data, size);
  try {
    vkqat::quant::read_stats_file(path);
  } catch (const vkqat::Error&) {
  }
  return 0;
}

// CIFAR-10 binary batch files (1 label byte + 3072 pixel bytes per record).
#include "fuzz_common.h"
#include "nn/data/dataset.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = vkqat::fuzz::write_scratch("cifar.bin", data, size);
  try {
    vkqat::nn::Dataset d = vkqat::nn::load_cifar10_files({path});
    if (d.images.size() != d.image_size() * size_t(d.n) || d.labels.size() != size_t(d.n)) __builtin_trap();
    for (uint8_t l : d.labels)
      if (l >= d.classes) __builtin_trap();
  } catch (const vkqat::Error&) {
  }
  return 0;
}

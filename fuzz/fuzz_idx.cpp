// IDX image + label files (MNIST / Fashion-MNIST), raw or gzip. The input is split in two:
// its first byte says where the label file starts (as a fraction of the rest).
#include "fuzz_common.h"
#include "nn/data/dataset.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const size_t rest = size - 1, split = rest * data[0] / 255;
  const std::string img = vkqat::fuzz::write_scratch("images", data + 1, split);
  const std::string lab = vkqat::fuzz::write_scratch("labels", data + 1 + split, rest - split);
  try {
    vkqat::nn::Dataset d = vkqat::nn::load_idx(img, lab);
    if (d.images.size() != d.image_size() * size_t(d.n) || d.labels.size() != size_t(d.n)) __builtin_trap();
    for (uint8_t l : d.labels)
      if (l >= d.classes) __builtin_trap();
  } catch (const vkqat::Error&) {
  }
  return 0;
}

// Image folders and caches: the JPEG (libjpeg-turbo, reduced-DCT) and PNG (stb_image)
// decoders from memory, then the per-image pipeline of an image folder (to_base, then the
// train or eval transform at a small size); or, when the image bytes start with the cache
// magic "VKQATIC1", the decoded-image cache reader and its transform.
//
// Input: byte 0 chooses the pipeline (see Options), the rest is the file.
#include <algorithm>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "fuzz_common.h"
#include "nn/data/image_cache.h"
#include "nn/data/image_decode.h"
#include "nn/data/image_transform.h"

namespace vkqat::fuzz {

// bit 0: channels 1 or 3; bits 1-2: augment mode; bit 3: train; bits 4-7: size 4..34.
inline nn::ImageTransform image_transform_of(uint8_t options) {
  nn::ImageTransform t;
  t.channels = (options & 1) ? 3 : 1;
  t.mode = nn::AugmentMode((options >> 1) & 3);
  t.size = 4 + 2 * (options >> 4);
  return t;
}

inline void image_pipeline(const uint8_t* data, size_t size) {
  if (size == 0) return;
  const nn::ImageTransform t = image_transform_of(data[0]);
  const bool train = (data[0] >> 3) & 1;
  ++data, --size;
  std::vector<uint8_t> out(size_t(t.channels) * t.size * t.size);
  std::mt19937_64 rng(size);
  if (size >= 8 && std::memcmp(data, "VKQATIC1", 8) == 0) {
    const std::string path = write_scratch("cache.vkqc", data, size);
    try {
      auto cache = std::make_shared<const nn::MappedCache>(path);
      nn::ImageTransform ct = t;
      ct.channels = cache->channels();
      out.resize(size_t(ct.channels) * ct.size * ct.size);
      for (uint32_t split = 0; split < 2; ++split) {
        nn::CacheSource src(cache, split, ct, 1);
        for (int i = 0; i < src.size() && i < 4; ++i)
          if (src.produce(i, train, rng(), out.data()) != src.label(i)) __builtin_trap();
      }
    } catch (const Error&) {
    }
    return;
  }
  try {
    const nn::ImageInfo info = nn::probe_image(data, size);
    nn::Image img = nn::decode_image(data, size, t.channels, t.base_size());
    if (img.channels != t.channels || img.width <= 0 || img.height <= 0 ||
        img.pixels.size() != size_t(img.width) * img.height * img.channels)
      __builtin_trap();
    // Reduced-DCT decoding only ever shrinks, and never below the base size (or the image).
    if (img.width > info.width || img.height > info.height ||
        std::min(img.width, img.height) < std::min({t.base_size(), info.width, info.height}))
      __builtin_trap();
    nn::Image base = t.to_base(std::move(img));
    if (std::min(base.width, base.height) != t.base_size()) __builtin_trap();
    t.apply(base.pixels.data(), base.height, base.width, train, rng, out.data());
  } catch (const nn::DecodeError&) {
  } catch (const Error&) {
  }
}

}  // namespace vkqat::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  vkqat::fuzz::image_pipeline(data, size);
  return 0;
}

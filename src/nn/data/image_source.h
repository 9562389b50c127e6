#pragma once
// Streamed datasets: images produced one at a time on demand (decoded from files or read
// from a memory-mapped cache), so a dataset is never held in RAM as a whole. The batch
// loader calls produce() from its worker threads; implementations must be thread-safe.
#include <cstdint>
#include <string>

#include "nn/data/image_transform.h"

namespace vkqat::nn {

class ImageSource {
 public:
  virtual ~ImageSource() = default;
  virtual int size() const = 0;
  virtual uint32_t label(int i) const = 0;
  virtual std::string describe(int i) const = 0;  // the file (or cache record) of image i
  // Writes image i, transformed (train: augmented with a generator seeded by rng_seed;
  // eval: the center crop), as transform().channels x size x size uint8 CHW into out.
  // Returns the label of the image written: a folder substitutes the next readable image
  // for one that fails to decode (after one warning), unless strict.
  virtual uint32_t produce(int i, bool train, uint64_t rng_seed, uint8_t* out) const = 0;
  virtual const ImageTransform& transform() const = 0;
  virtual int workers() const = 0;  // decode threads the loader should use (>= 1)
};

}  // namespace vkqat::nn

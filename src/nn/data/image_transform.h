#pragma once
// The per-image pipeline of image folders and caches, after torchvision's recipes:
//
//   file --decode--> base image (shorter side resized to base_size(), channels fixed)
//        --transform--> size x size uint8 CHW (train: augmented; eval: center crop)
//
// A decoded-image cache stores exactly the base images, so a folder and its cache give
// identical batches. Modes (--augment):
//   none      train = eval: center crop of the base (base size = size)
//   flip      center crop + horizontal flip (p = 0.5)
//   crop      CIFAR style: center crop, zero-pad 4, random size x size crop, flip
//   imagenet  train: RandomResizedCrop(size, scale 0.08-1, ratio 3/4-4/3) + flip on the
//             base; eval: center crop. Base size = round(size / 0.875) (256 for 224).
// Randomness: one std::mt19937_64 per image, seeded by the caller from (seed, epoch,
// image index); floats are (r >> 11) * 2^-53 and integers r % n, so results do not
// depend on the standard library.
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "nn/data/image_decode.h"

namespace vkqat::nn {

enum class AugmentMode { None, Flip, Crop, ImageNet };

AugmentMode parse_augment_mode(const std::string& s);  // throws Error naming --augment
const char* augment_mode_name(AugmentMode m);

struct ImageTransform {
  AugmentMode mode = AugmentMode::None;
  int size = 32;      // output side
  int channels = 3;   // 1 or 3
  int crop_pad = 4;   // zero padding of the crop mode

  // Shorter side of the base image.
  int base_size() const;
  // Resizes a decoded image so its shorter side is base_size() (no copy when it already is).
  Image to_base(Image img) const;
  // The base of `img`: img itself when its shorter side is base_size() already, else
  // `resized` (its pixel memory reused) holding the resized image.
  const Image& to_base(const Image& img, Image& resized) const;
  // size x size x channels CHW into out (channels * size * size bytes). `base` is HWC
  // with channels() == channels; its shorter side should be base_size() (any size works).
  void apply(const uint8_t* base, int height, int width, bool train, std::mt19937_64& rng, uint8_t* out) const;
};

// Resizes HWC uint8 with libyuv's ScalePlane, one plane per channel, kFilterBox: an area
// average (box filter, anti-aliased) when a side shrinks by more than 2x, bilinear
// otherwise (8-bit fixed point, edges clamped). `src` may be a window of a larger image
// (src_stride bytes per row; 0 = packed). Sides up to kMaxResizeSide (libyuv's 16.16
// fixed-point positions); larger throws Error.
constexpr int kMaxResizeSide = 32767;
void resize_image(const uint8_t* src, int w, int h, int src_stride, uint8_t* dst, int dw, int dh, int channels);

}  // namespace vkqat::nn

// Base resize and augmentation of folder/cache images. See image_transform.h.
#include "nn/data/image_transform.h"

#include <stb/stb_image_resize.h>

#include <algorithm>
#include <cmath>

#include "backend/error.h"

namespace vkqat::nn {
namespace {

inline double uniform01(std::mt19937_64& rng) { return double(rng() >> 11) * (1.0 / 9007199254740992.0); }
inline int draw_int(std::mt19937_64& rng, int n) { return int(rng() % uint64_t(n)); }  // [0, n)

// Copies the window (x0, y0, w, h) of HWC `src` (row stride sw) to CHW `out`, mirrored when flip.
void window_to_chw(const uint8_t* src, int sw, int channels, int x0, int y0, int w, int h, bool flip, uint8_t* out) {
  const size_t plane = size_t(w) * h;
  for (int y = 0; y < h; ++y) {
    const uint8_t* row = src + (size_t(y0 + y) * sw + x0) * channels;
    for (int x = 0; x < w; ++x) {
      const uint8_t* p = row + size_t(flip ? w - 1 - x : x) * channels;
      for (int c = 0; c < channels; ++c) out[c * plane + size_t(y) * w + x] = p[c];
    }
  }
}

}  // namespace

AugmentMode parse_augment_mode(const std::string& s) {
  if (s == "none") return AugmentMode::None;
  if (s == "flip") return AugmentMode::Flip;
  if (s == "crop") return AugmentMode::Crop;
  if (s == "imagenet") return AugmentMode::ImageNet;
  throw Error("--augment " + s + ": expected none, flip, crop or imagenet");
}

const char* augment_mode_name(AugmentMode m) {
  switch (m) {
    case AugmentMode::None: return "none";
    case AugmentMode::Flip: return "flip";
    case AugmentMode::Crop: return "crop";
    case AugmentMode::ImageNet: return "imagenet";
  }
  return "?";
}

void resize_image(const uint8_t* src, int w, int h, int src_stride, uint8_t* dst, int dw, int dh, int channels) {
  if (!stbir_resize_uint8(src, w, h, src_stride, dst, dw, dh, 0, channels))
    throw Error("image resize " + std::to_string(w) + "x" + std::to_string(h) + " -> " + std::to_string(dw) + "x" +
                std::to_string(dh) + " failed");
}

int ImageTransform::base_size() const {
  return mode == AugmentMode::ImageNet ? int(std::lround(size / 0.875)) : size;
}

Image ImageTransform::to_base(Image img) const {
  const int b = base_size();
  const int short_side = std::min(img.width, img.height);
  if (short_side == b) return img;
  // Like torchvision's Resize(int): the shorter side becomes b, the longer one keeps the ratio.
  int nw, nh;
  if (img.width <= img.height) {
    nw = b;
    nh = std::max(1, int(std::lround(double(img.height) * b / img.width)));
  } else {
    nh = b;
    nw = std::max(1, int(std::lround(double(img.width) * b / img.height)));
  }
  Image out;
  out.width = nw, out.height = nh, out.channels = img.channels;
  out.pixels.resize(size_t(nw) * nh * img.channels);
  resize_image(img.pixels.data(), img.width, img.height, 0, out.pixels.data(), nw, nh, img.channels);
  return out;
}

void ImageTransform::apply(const uint8_t* base, int h, int w, bool train, std::mt19937_64& rng, uint8_t* out) const {
  const int S = size, C = channels;
  const size_t plane = size_t(S) * S;
  std::vector<uint8_t> scratch;
  // A base smaller than S in a dimension (an image resized for another size) is first
  // enlarged so a center crop exists.
  if (h < S || w < S) {
    const double k = double(S) / std::min(h, w);
    const int nw = std::max(S, int(std::lround(w * k))), nh = std::max(S, int(std::lround(h * k)));
    scratch.resize(size_t(nw) * nh * C);
    resize_image(base, w, h, 0, scratch.data(), nw, nh, C);
    base = scratch.data(), w = nw, h = nh;
  }
  const int cx = (w - S) / 2, cy = (h - S) / 2;  // center crop
  if (!train || mode == AugmentMode::None) {
    window_to_chw(base, w, C, cx, cy, S, S, false, out);
    return;
  }
  if (mode == AugmentMode::Flip) {
    window_to_chw(base, w, C, cx, cy, S, S, draw_int(rng, 2) == 1, out);
    return;
  }
  if (mode == AugmentMode::Crop) {
    const int p = crop_pad, span = 2 * p + 1;
    const int dy = draw_int(rng, span) - p, dx = draw_int(rng, span) - p;
    const bool flip = draw_int(rng, 2) == 1;
    for (int y = 0; y < S; ++y) {
      const int sy = y + dy;
      for (int x = 0; x < S; ++x) {
        const int sx = (flip ? S - 1 - x : x) + dx;  // crop, then mirror the crop
        const bool inside = sy >= 0 && sy < S && sx >= 0 && sx < S;
        // The pixel's address only when inside: in the padding it would point before the
        // image (a pointer overflow, undefined even unread; found by fuzz_image).
        const uint8_t* px = inside ? base + (size_t(cy + sy) * w + cx + sx) * C : nullptr;
        for (int c = 0; c < C; ++c) out[c * plane + size_t(y) * S + x] = inside ? px[c] : 0;
      }
    }
    return;
  }
  // RandomResizedCrop (torchvision's get_params): 10 tries of a random area and aspect
  // ratio, else a center crop at the clamped ratio.
  const double area = double(w) * h, log_lo = std::log(3.0 / 4.0), log_hi = std::log(4.0 / 3.0);
  int cw = 0, ch = 0, x0 = 0, y0 = 0;
  bool found = false;
  for (int attempt = 0; attempt < 10 && !found; ++attempt) {
    const double target = area * (0.08 + (1.0 - 0.08) * uniform01(rng));
    const double ratio = std::exp(log_lo + (log_hi - log_lo) * uniform01(rng));
    const int tw = int(std::lround(std::sqrt(target * ratio))), th = int(std::lround(std::sqrt(target / ratio)));
    if (tw > 0 && th > 0 && tw <= w && th <= h) {
      cw = tw, ch = th;
      y0 = draw_int(rng, h - th + 1);
      x0 = draw_int(rng, w - tw + 1);
      found = true;
    }
  }
  if (!found) {
    const double in_ratio = double(w) / h;
    if (in_ratio < 3.0 / 4.0) {
      cw = w, ch = int(std::lround(w / (3.0 / 4.0)));
    } else if (in_ratio > 4.0 / 3.0) {
      ch = h, cw = int(std::lround(h * (4.0 / 3.0)));
    } else {
      cw = w, ch = h;
    }
    cw = std::min(cw, w), ch = std::min(ch, h);
    x0 = (w - cw) / 2, y0 = (h - ch) / 2;
  }
  const bool flip = draw_int(rng, 2) == 1;
  std::vector<uint8_t> crop(plane * C);
  resize_image(base + (size_t(y0) * w + x0) * C, cw, ch, w * C, crop.data(), S, S, C);
  window_to_chw(crop.data(), S, C, 0, 0, S, S, flip, out);
}

}  // namespace vkqat::nn

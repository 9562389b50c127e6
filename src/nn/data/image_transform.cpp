// Base resize and augmentation of folder/cache images. See image_transform.h.
#include "nn/data/image_transform.h"

#include <libyuv/planar_functions.h>
#include <libyuv/rotate.h>
#include <libyuv/scale.h>

#include <algorithm>
#include <cmath>

#include "backend/error.h"

namespace vkqat::nn {
namespace {

inline double uniform01(std::mt19937_64& rng) { return double(rng() >> 11) * (1.0 / 9007199254740992.0); }
inline int draw_int(std::mt19937_64& rng, int n) { return int(rng() % uint64_t(n)); }  // [0, n)

// Per-thread scratch (the loader's workers call apply() for every image: no heap
// allocation per image once a worker has seen the largest crop). Buffers above
// kKeepScratch (a huge PNG's planes) are freed after use, so a worker does not keep them.
constexpr size_t kKeepScratch = size_t(8) << 20;
thread_local std::vector<uint8_t> scratch_buf[4];

uint8_t* scratch(int slot, size_t bytes) {
  std::vector<uint8_t>& b = scratch_buf[slot];
  if (b.size() < bytes) b.resize(bytes);
  return b.data();
}

void trim_scratch() {
  for (std::vector<uint8_t>& b : scratch_buf)
    if (b.size() > kKeepScratch) std::vector<uint8_t>().swap(b);
}

// HWC window (w x h, row stride `stride` bytes) -> 1 or 3 planes of w x h (plane stride w).
void split_planes(const uint8_t* src, int stride, int w, int h, int channels, uint8_t* planes) {
  const size_t plane = size_t(w) * h;
  if (channels == 1)
    libyuv::CopyPlane(src, stride, planes, w, w, h);
  else
    libyuv::SplitRGBPlane(src, stride, planes, w, planes + plane, w, planes + 2 * plane, w, w, h);
}

// Copies the window (x0, y0, w, h) of HWC `src` (row stride sw pixels) to CHW `out`, mirrored when flip.
void window_to_chw(const uint8_t* src, int sw, int channels, int x0, int y0, int w, int h, bool flip, uint8_t* out) {
  const uint8_t* win = src + (size_t(y0) * sw + x0) * channels;
  const size_t plane = size_t(w) * h;
  if (!flip) return split_planes(win, sw * channels, w, h, channels, out);
  uint8_t* tmp = scratch(0, plane * channels);
  split_planes(win, sw * channels, w, h, channels, tmp);
  for (int c = 0; c < channels; ++c) libyuv::MirrorPlane(tmp + c * plane, w, out + c * plane, w, w, h);
}

// Scales one plane (row stride `stride`) to dw x dh at dst (stride dw), mirrored when flip.
// Shrinking by more than 2x on both sides: libyuv's box filter (an area average). Else
// bilinear as two vertical passes around transposes: libyuv's vertical filter is a wide
// SIMD row blend with exact 8-bit weights, its horizontal one a per-pixel gather that took
// 4x longer, and its ARGB variant (one step per RGB pixel) weights the two taps 127/128 in
// all, darkening every resized image by 1% (tested: a constant image must stay constant).
void scale_plane(const uint8_t* src, int stride, int w, int h, uint8_t* dst, int dw, int dh, bool flip) {
  if (w > 2 * dw && h > 2 * dh) {
    uint8_t* scaled = flip ? scratch(2, size_t(dw) * dh) : dst;
    libyuv::ScalePlane(src, stride, w, h, scaled, dw, dw, dh, libyuv::kFilterBox);
    if (flip) libyuv::MirrorPlane(scaled, dw, dst, dw, dw, dh);
    return;
  }
  uint8_t* rows = scratch(2, size_t(w) * dh);  // w x dh: the vertical pass
  libyuv::ScalePlane(src, stride, w, h, rows, w, w, dh, libyuv::kFilterBilinear);
  uint8_t* cols = scratch(3, size_t(dh) * w);  // dh x w: transposed
  libyuv::TransposePlane(rows, w, cols, dh, w, dh);
  uint8_t* scaled = scratch(2, size_t(dh) * dw);  // dh x dw: the horizontal pass, still transposed
  libyuv::ScalePlane(cols, dh, dh, w, scaled, dh, dh, dw, libyuv::kFilterBilinear);
  if (flip)  // a transpose reading the rows bottom-up is the mirrored transpose
    libyuv::RotatePlane90(scaled, dh, dst, dw, dh, dw);
  else
    libyuv::TransposePlane(scaled, dh, dst, dw, dh, dw);
}

// Resizes the HWC window `src` (w x h, row stride `stride` bytes) to dw x dh planes (CHW),
// mirrored when flip.
void resize_to_chw(const uint8_t* src, int w, int h, int stride, int channels, int dw, int dh, bool flip,
                   uint8_t* out) {
  if (channels == 1) return scale_plane(src, stride, w, h, out, dw, dh, flip);
  const size_t in_plane = size_t(w) * h, out_plane = size_t(dw) * dh;
  uint8_t* planes = scratch(0, in_plane * 3);
  split_planes(src, stride, w, h, 3, planes);
  for (int c = 0; c < 3; ++c) scale_plane(planes + c * in_plane, w, w, h, out + c * out_plane, dw, dh, flip);
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
  const auto side_ok = [](int n) { return n >= 1 && n <= kMaxResizeSide; };
  if ((channels != 1 && channels != 3) || !side_ok(w) || !side_ok(h) || !side_ok(dw) || !side_ok(dh))
    throw Error("image resize " + std::to_string(w) + "x" + std::to_string(h) + "x" + std::to_string(channels) +
                " -> " + std::to_string(dw) + "x" + std::to_string(dh) + ": unsupported shape (sides 1.." +
                std::to_string(kMaxResizeSide) + ", 1 or 3 channels)");
  if (src_stride == 0) src_stride = w * channels;
  if (channels == 1) {
    resize_to_chw(src, w, h, src_stride, 1, dw, dh, false, dst);
  } else {  // the same arithmetic as apply()'s crop resize, back to RGB bytes
    const size_t out_plane = size_t(dw) * dh;
    uint8_t* planes = scratch(1, out_plane * 3);
    resize_to_chw(src, w, h, src_stride, 3, dw, dh, false, planes);
    libyuv::MergeRGBPlane(planes, dw, planes + out_plane, dw, planes + 2 * out_plane, dw, dst, dw * 3, dw, dh);
  }
  trim_scratch();
}

int ImageTransform::base_size() const {
  return mode == AugmentMode::ImageNet ? int(std::lround(size / 0.875)) : size;
}

Image ImageTransform::to_base(Image img) const {
  Image resized;
  return &to_base(img, resized) == &img ? std::move(img) : std::move(resized);
}

const Image& ImageTransform::to_base(const Image& img, Image& out) const {
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
  out.width = nw, out.height = nh, out.channels = img.channels;
  out.pixels.resize(size_t(nw) * nh * img.channels);
  resize_image(img.pixels.data(), img.width, img.height, 0, out.pixels.data(), nw, nh, img.channels);
  return out;
}

void ImageTransform::apply(const uint8_t* base, int h, int w, bool train, std::mt19937_64& rng, uint8_t* out) const {
  const int S = size, C = channels;
  const size_t plane = size_t(S) * S;
  std::vector<uint8_t> enlarged;
  // A base smaller than S in a dimension (an image resized for another size) is first
  // enlarged so a center crop exists.
  if (h < S || w < S) {
    const double k = double(S) / std::min(h, w);
    const int nw = std::max(S, int(std::lround(w * k))), nh = std::max(S, int(std::lround(h * k)));
    enlarged.resize(size_t(nw) * nh * C);
    resize_image(base, w, h, 0, enlarged.data(), nw, nh, C);
    base = enlarged.data(), w = nw, h = nh;
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
  resize_to_chw(base + (size_t(y0) * w + x0) * C, cw, ch, w * C, C, S, S, flip, out);
  trim_scratch();
}

}  // namespace vkqat::nn

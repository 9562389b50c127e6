#pragma once
// JPEG (libjpeg-turbo) and PNG (stb_image) decoding of whole files held in memory.
//
// Every failure is a DecodeError naming the problem (the caller adds the file name):
// not an image, truncated or corrupt data, or an image too large to decode. libjpeg's
// warnings (e.g. "premature end of data segment", which it would otherwise paper over with
// gray pixels) count as corruption, so a truncated JPEG is rejected rather than trained on.
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace vkqat::nn {

struct DecodeError : std::runtime_error {
  explicit DecodeError(const std::string& what) : std::runtime_error(what) {}
};

enum class ImageFormat { Unknown, Jpeg, Png };

// What a file's header says, without decoding its pixels.
struct ImageInfo {
  ImageFormat format = ImageFormat::Unknown;
  int width = 0, height = 0;
  int channels = 0;  // colour channels in the file: 1 (gray, gray+alpha) or 3 (RGB, RGBA, palette, YCbCr, CMYK)
};

// Largest decoded image accepted, in pixels (after JPEG's reduced-DCT scaling): a header
// claiming more (e.g. 30000x30000 = 900 MP) is refused before any pixel memory is taken.
constexpr int64_t kMaxDecodePixels = int64_t(1) << 27;  // 134 MP
// Largest working memory libjpeg may take for a progressive or multi-scan JPEG, whose
// whole-image coefficient buffer (2 bytes per sample of the full-size image, whatever
// the reduced-DCT scale) can be far larger than the decoded image: a 30000x30000
// progressive header decoded at 1/8 would otherwise ask for 2.7 GB.
constexpr int64_t kMaxJpegWorkBytes = int64_t(1) << 30;  // 1 GiB

// An 8-bit HWC image.
struct Image {
  int width = 0, height = 0, channels = 0;
  std::vector<uint8_t> pixels;  // height * width * channels
};

const char* format_name(ImageFormat f);
// Format from the magic bytes (the file name's extension is ignored).
ImageFormat sniff_format(const uint8_t* data, size_t size);

// Header only. `data` may be a prefix of the file; throws DecodeError when it is not
// enough (or the file is not a JPEG/PNG, or the header is corrupt).
ImageInfo probe_image(const uint8_t* data, size_t size);

// Decodes to `channels` (1 = gray, 3 = RGB; alpha is dropped, palettes expanded, gray
// replicated, RGB reduced to luma). min_short_side > 0 lets a JPEG decode at the smallest
// libjpeg-turbo DCT scale M/8 (M = 1, 2, 4 or 8) whose shorter side is still >= min_short_side.
Image decode_image(const uint8_t* data, size_t size, int channels, int min_short_side = 0);
// The same into `out`, reusing its pixel memory (the loader's workers decode every image
// into one per-thread Image: no allocation or page faults per image).
void decode_image_into(const uint8_t* data, size_t size, int channels, int min_short_side, Image& out);

}  // namespace vkqat::nn

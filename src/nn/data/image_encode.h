#pragma once
// JPEG encoding with libjpeg-turbo's compressor. stb_image_write's JPEG writer always
// writes three YCbCr components, so a grayscale image would come back as RGB; this one
// writes a 1-component JPEG for 1-channel input (what `vkqat data export` needs for
// MNIST / Fashion-MNIST) and YCbCr 4:2:0 for RGB.
#include <cstdint>
#include <vector>

namespace vkqat::nn {

// pixels: height * width * channels HWC bytes; channels 1 (gray) or 3 (RGB); quality 1..100.
// progressive: a progressive (multi-scan) JPEG instead of a baseline one. Throws Error.
std::vector<uint8_t> encode_jpeg(const uint8_t* pixels, int width, int height, int channels, int quality,
                                 bool progressive = false);

}  // namespace vkqat::nn

// Image decoding. See image_decode.h.
#include "nn/data/image_decode.h"

#include <jpeglib.h>
#include <jerror.h>
#include <stb/stb_image.h>

#include <algorithm>
#include <csetjmp>
#include <cstdio>
#include <cstring>

namespace vkqat::nn {
namespace {

// libjpeg reports errors through error_exit (which must not return): we longjmp back
// with the formatted message. Warnings (emit_message level -1) are treated as errors.
struct JpegErr {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void jpeg_error_exit(j_common_ptr cinfo) {
  JpegErr* e = reinterpret_cast<JpegErr*>(cinfo->err);
  if (cinfo->err->msg_code == JERR_NO_BACKING_STORE)  // max_memory_to_use exceeded (jmemnobs has no disk)
    std::snprintf(e->message, sizeof e->message, "image too large to decode (needs more than %lld MiB of JPEG buffers)",
                  (long long)(kMaxJpegWorkBytes >> 20));
  else
    (*cinfo->err->format_message)(cinfo, e->message);
  std::longjmp(e->jump, 1);
}

void jpeg_emit_message(j_common_ptr cinfo, int level) {
  if (level < 0) jpeg_error_exit(cinfo);  // a warning: corrupt or truncated data
}

void jpeg_silent(j_common_ptr) {}

// Everything that longjmps lives in this function's frame; no C++ object with a
// destructor is created between setjmp and the longjmp target. *err is the whole message
// of a failure: libjpeg's own ones are prefixed "corrupt ...", ours ("image too large") not.
bool jpeg_run(const uint8_t* data, size_t size, bool header_only, int channels, int min_short, ImageInfo* info,
              Image* out, std::string* err) {
  jpeg_decompress_struct cinfo;
  JpegErr jerr;
  cinfo.err = jpeg_std_error(&jerr.mgr);
  jerr.mgr.error_exit = jpeg_error_exit;
  jerr.mgr.emit_message = jpeg_emit_message;
  jerr.mgr.output_message = jpeg_silent;
  jerr.message[0] = 0;
  if (setjmp(jerr.jump)) {
    jpeg_destroy_decompress(&cinfo);
    const char* prefix = jerr.mgr.msg_code == JERR_NO_BACKING_STORE ? ""
                         : header_only                              ? "corrupt JPEG header: "
                                                                    : "corrupt or truncated JPEG: ";
    *err = prefix + std::string(jerr.message);
    return false;
  }
  jpeg_create_decompress(&cinfo);
  cinfo.mem->max_memory_to_use = long(kMaxJpegWorkBytes);
  jpeg_mem_src(&cinfo, data, (unsigned long)size);
  jpeg_read_header(&cinfo, TRUE);
  info->format = ImageFormat::Jpeg;
  info->width = int(cinfo.image_width);
  info->height = int(cinfo.image_height);
  info->channels = cinfo.num_components == 1 ? 1 : 3;
  if (header_only) {
    jpeg_destroy_decompress(&cinfo);
    return true;
  }
  cinfo.out_color_space = channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
  // Reduced-DCT decoding: the smallest M/8 whose shorter side still reaches min_short,
  // M in {1, 2, 4, 8}: libjpeg-turbo has SIMD inverse DCTs for those sizes only, and the
  // plain-C 3..7-point ones made a 6/8 decode slower than the full 8/8 one (see README).
  const int short_side = int(std::min(cinfo.image_width, cinfo.image_height));
  int m = 8;
  if (min_short > 0)
    for (int k : {1, 2, 4})
      if ((int64_t(short_side) * k + 7) / 8 >= min_short) {
        m = k;
        break;
      }
  cinfo.scale_num = unsigned(m);
  cinfo.scale_denom = 8;
  jpeg_calc_output_dimensions(&cinfo);
  if (int64_t(cinfo.output_width) * cinfo.output_height > kMaxDecodePixels) {
    std::snprintf(jerr.message, sizeof jerr.message, "image too large to decode (%ux%u)", cinfo.output_width,
                  cinfo.output_height);
    jpeg_destroy_decompress(&cinfo);
    *err = jerr.message;
    return false;
  }
  if (int(cinfo.out_color_components) != channels) {
    std::snprintf(jerr.message, sizeof jerr.message, "cannot convert %d JPEG components to %d channels",
                  cinfo.num_components, channels);
    jpeg_destroy_decompress(&cinfo);
    *err = jerr.message;
    return false;
  }
  // out->pixels is sized before the decode starts: no allocation happens after a
  // possible longjmp point inside the scanline loop.
  out->width = int(cinfo.output_width);
  out->height = int(cinfo.output_height);
  out->channels = channels;
  out->pixels.resize(size_t(out->width) * out->height * channels);
  jpeg_start_decompress(&cinfo);
  const size_t stride = size_t(out->width) * channels;
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = out->pixels.data() + size_t(cinfo.output_scanline) * stride;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return true;
}

const uint8_t kPngMagic[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

uint32_t be32(const uint8_t* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}

// The IHDR chunk directly (stb_image's info call wants the whole file for some PNGs).
ImageInfo png_header(const uint8_t* data, size_t size) {
  if (size < 8 + 8 + 13) throw DecodeError("truncated PNG header");
  if (std::memcmp(data + 12, "IHDR", 4) != 0 || be32(data + 8) != 13) throw DecodeError("corrupt PNG header (no IHDR)");
  ImageInfo info;
  info.format = ImageFormat::Png;
  const uint32_t w = be32(data + 16), h = be32(data + 20);
  const int colour_type = data[25];
  if (w == 0 || h == 0 || w > 0x7fffffffu || h > 0x7fffffffu)
    throw DecodeError("corrupt PNG header (size " + std::to_string(w) + "x" + std::to_string(h) + ")");
  info.width = int(w), info.height = int(h);
  // colour types: 0 gray, 2 RGB, 3 palette, 4 gray+alpha, 6 RGBA
  if (colour_type == 0 || colour_type == 4)
    info.channels = 1;
  else if (colour_type == 2 || colour_type == 3 || colour_type == 6)
    info.channels = 3;
  else
    throw DecodeError("corrupt PNG header (colour type " + std::to_string(colour_type) + ")");
  return info;
}

}  // namespace

const char* format_name(ImageFormat f) {
  switch (f) {
    case ImageFormat::Jpeg: return "jpeg";
    case ImageFormat::Png: return "png";
    default: return "unknown";
  }
}

ImageFormat sniff_format(const uint8_t* data, size_t size) {
  if (size >= 3 && data[0] == 0xff && data[1] == 0xd8 && data[2] == 0xff) return ImageFormat::Jpeg;
  if (size >= 8 && std::memcmp(data, kPngMagic, 8) == 0) return ImageFormat::Png;
  return ImageFormat::Unknown;
}

ImageInfo probe_image(const uint8_t* data, size_t size) {
  if (size == 0) throw DecodeError("empty file");
  switch (sniff_format(data, size)) {
    case ImageFormat::Png: return png_header(data, size);
    case ImageFormat::Jpeg: {
      ImageInfo info;
      std::string err;
      if (!jpeg_run(data, size, true, 3, 0, &info, nullptr, &err)) throw DecodeError(err);
      if (info.width <= 0 || info.height <= 0) throw DecodeError("corrupt JPEG header (zero size)");
      return info;
    }
    default: throw DecodeError("not a JPEG or PNG image");
  }
}

Image decode_image(const uint8_t* data, size_t size, int channels, int min_short_side) {
  Image out;
  decode_image_into(data, size, channels, min_short_side, out);
  return out;
}

void decode_image_into(const uint8_t* data, size_t size, int channels, int min_short_side, Image& out) {
  if (channels != 1 && channels != 3) throw DecodeError("decode_image: channels must be 1 or 3");
  const ImageInfo info = probe_image(data, size);
  if (info.format == ImageFormat::Jpeg) {
    ImageInfo again;
    std::string err;
    if (!jpeg_run(data, size, false, channels, min_short_side, &again, &out, &err)) throw DecodeError(err);
    return;
  }
  if (int64_t(info.width) * info.height > kMaxDecodePixels)
    throw DecodeError("image too large to decode (" + std::to_string(info.width) + "x" + std::to_string(info.height) +
                      ")");
  if (size > size_t(0x7fffffff)) throw DecodeError("file too large");
  int w = 0, h = 0, n = 0;
  stbi_uc* px = stbi_load_from_memory(data, int(size), &w, &h, &n, channels);
  if (!px) throw DecodeError(std::string("corrupt or truncated PNG: ") + stbi_failure_reason());
  out.width = w, out.height = h, out.channels = channels;
  out.pixels.assign(px, px + size_t(w) * h * channels);
  stbi_image_free(px);
}

}  // namespace vkqat::nn

// JPEG encoding. See image_encode.h.
#include "nn/data/image_encode.h"

#include <csetjmp>
#include <cstdio>  // before jpeglib.h, which uses FILE
#include <cstdlib>
#include <string>

#include <jpeglib.h>

#include "backend/error.h"

namespace vkqat::nn {
namespace {

struct JpegEncodeErr {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void encode_error_exit(j_common_ptr cinfo) {
  JpegEncodeErr* e = reinterpret_cast<JpegEncodeErr*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, e->message);
  std::longjmp(e->jump, 1);
}

void encode_silent(j_common_ptr) {}

// Everything that longjmps lives in this frame, which creates no C++ object; the
// compressed bytes are left in *buf (malloc'ed by jpeg_mem_dest) for the caller to copy.
bool compress(const uint8_t* pixels, int width, int height, int channels, int quality, bool progressive,
              unsigned char** buf, unsigned long* len, char* message) {
  jpeg_compress_struct cinfo;
  JpegEncodeErr jerr;
  cinfo.err = jpeg_std_error(&jerr.mgr);
  jerr.mgr.error_exit = encode_error_exit;
  jerr.mgr.output_message = encode_silent;
  jerr.message[0] = 0;
  if (setjmp(jerr.jump)) {
    jpeg_destroy_compress(&cinfo);
    std::snprintf(message, JMSG_LENGTH_MAX, "%s", jerr.message);
    return false;
  }
  jpeg_create_compress(&cinfo);
  jpeg_mem_dest(&cinfo, buf, len);
  cinfo.image_width = JDIMENSION(width);
  cinfo.image_height = JDIMENSION(height);
  cinfo.input_components = channels;
  cinfo.in_color_space = channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_set_defaults(&cinfo);  // 1 component for JCS_GRAYSCALE, YCbCr 4:2:0 for RGB
  jpeg_set_quality(&cinfo, quality, TRUE);
  if (progressive) jpeg_simple_progression(&cinfo);
  jpeg_start_compress(&cinfo, TRUE);
  const size_t stride = size_t(width) * channels;
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row = const_cast<JSAMPROW>(pixels + size_t(cinfo.next_scanline) * stride);
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  jpeg_destroy_compress(&cinfo);
  return true;
}

}  // namespace

std::vector<uint8_t> encode_jpeg(const uint8_t* pixels, int width, int height, int channels, int quality,
                                 bool progressive) {
  if (channels != 1 && channels != 3) throw Error("encode_jpeg: channels must be 1 or 3, got " + std::to_string(channels));
  if (width < 1 || height < 1 || width > 65500 || height > 65500)
    throw Error("encode_jpeg: size " + std::to_string(width) + "x" + std::to_string(height) + " (JPEG: 1..65500)");
  if (quality < 1 || quality > 100) throw Error("encode_jpeg: quality " + std::to_string(quality) + ": expected 1..100");
  unsigned char* buf = nullptr;
  unsigned long len = 0;
  char message[JMSG_LENGTH_MAX];
  const bool ok = compress(pixels, width, height, channels, quality, progressive, &buf, &len, message);
  std::vector<uint8_t> out;
  if (ok) out.assign(buf, buf + len);
  std::free(buf);  // jpeg_mem_dest's buffer (also on failure, when it was allocated)
  if (!ok) throw Error(std::string("JPEG encoding failed: ") + message);
  return out;
}

}  // namespace vkqat::nn

#pragma once
// Writing small test images (PNG / JPEG with stb_image_write, palette PNG by hand with
// zlib) and image folders into temporary directories.
#include <stb/stb_image_write.h>
#include <unistd.h>
#include <zlib.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace vkqat::test {

struct TempFolder {
  std::filesystem::path path;
  TempFolder() {
    static std::atomic<int> counter{0};
    auto stamp = std::chrono::steady_clock::now().time_since_epoch().count();
    path = std::filesystem::temp_directory_path() /
           ("vkqat_test_images_" + std::to_string(::getpid()) + "_" + std::to_string(stamp) + "_" +
            std::to_string(counter++));
    std::filesystem::create_directories(path);
  }
  ~TempFolder() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::string operator/(const std::string& rel) const { return (path / rel).string(); }
};

// A deterministic HWC test pattern: smooth gradients plus a per-image offset.
inline std::vector<uint8_t> pattern(int w, int h, int c, int seed) {
  std::vector<uint8_t> px(size_t(w) * h * c);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int k = 0; k < c; ++k)
        px[(size_t(y) * w + x) * c + k] = uint8_t((x * 255 / std::max(1, w - 1) + y * 3 + k * 60 + seed * 37) & 255);
  return px;
}

inline void make_parent(const std::string& path) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
}

inline void write_png(const std::string& path, int w, int h, int c, int seed = 0) {
  make_parent(path);
  std::vector<uint8_t> px = pattern(w, h, c, seed);
  if (!stbi_write_png(path.c_str(), w, h, c, px.data(), w * c)) throw std::runtime_error("cannot write " + path);
}

inline void write_png_pixels(const std::string& path, int w, int h, int c, const std::vector<uint8_t>& px) {
  make_parent(path);
  if (!stbi_write_png(path.c_str(), w, h, c, px.data(), w * c)) throw std::runtime_error("cannot write " + path);
}

inline void write_jpg(const std::string& path, int w, int h, int c, int seed = 0, int quality = 95) {
  make_parent(path);
  std::vector<uint8_t> px = pattern(w, h, c, seed);
  if (!stbi_write_jpg(path.c_str(), w, h, c, px.data(), quality)) throw std::runtime_error("cannot write " + path);
}

inline void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  make_parent(path);
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
}

inline std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

// PNG chunks by hand (for the colour types stb_image_write cannot produce).
inline void png_chunk(std::vector<uint8_t>& out, const char* type, const std::vector<uint8_t>& data) {
  const uint32_t n = uint32_t(data.size());
  for (int s = 24; s >= 0; s -= 8) out.push_back(uint8_t(n >> s));
  std::vector<uint8_t> body(type, type + 4);
  body.insert(body.end(), data.begin(), data.end());
  out.insert(out.end(), body.begin(), body.end());
  const uint32_t crc = uint32_t(crc32(0, body.data(), uInt(body.size())));
  for (int s = 24; s >= 0; s -= 8) out.push_back(uint8_t(crc >> s));
}

inline std::vector<uint8_t> be32_bytes(uint32_t v) { return {uint8_t(v >> 24), uint8_t(v >> 16), uint8_t(v >> 8), uint8_t(v)}; }

// A PNG header (signature + IHDR) claiming w x h RGB, with no image data.
inline std::vector<uint8_t> png_header_only(uint32_t w, uint32_t h) {
  std::vector<uint8_t> out = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  std::vector<uint8_t> ihdr = be32_bytes(w), hb = be32_bytes(h);
  ihdr.insert(ihdr.end(), hb.begin(), hb.end());
  ihdr.insert(ihdr.end(), {8, 2, 0, 0, 0});
  png_chunk(out, "IHDR", ihdr);
  return out;
}

// 8-bit palette PNG: index (x + y) % palette.size()/3.
inline void write_palette_png(const std::string& path, int w, int h, const std::vector<uint8_t>& palette) {
  std::vector<uint8_t> out = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  std::vector<uint8_t> ihdr = be32_bytes(uint32_t(w)), hb = be32_bytes(uint32_t(h));
  ihdr.insert(ihdr.end(), hb.begin(), hb.end());
  ihdr.insert(ihdr.end(), {8, 3, 0, 0, 0});
  png_chunk(out, "IHDR", ihdr);
  png_chunk(out, "PLTE", palette);
  const int k = int(palette.size() / 3);
  std::vector<uint8_t> raw;
  for (int y = 0; y < h; ++y) {
    raw.push_back(0);  // filter: none
    for (int x = 0; x < w; ++x) raw.push_back(uint8_t((x + y) % k));
  }
  uLongf len = compressBound(uLong(raw.size()));
  std::vector<uint8_t> z(len);
  compress(z.data(), &len, raw.data(), uLong(raw.size()));
  z.resize(len);
  png_chunk(out, "IDAT", z);
  png_chunk(out, "IEND", {});
  write_bytes(path, out);
}

}  // namespace vkqat::test

// Hostile image and cache files found or foreseen while fuzzing (fuzz/fuzz_image.cpp): huge
// declared sizes must be refused before memory is taken, header numbers must be checked.
// Also the libjpeg-turbo encoder (1-component JPEGs for `vkqat data export`). Pure CPU.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "backend/error.h"
#include "image_test_util.h"
#include "nn/data/image_cache.h"
#include "nn/data/image_decode.h"
#include "nn/data/image_encode.h"

using namespace vkqat;
using namespace vkqat::nn;
using vkqat::test::TempFolder;

namespace {

// The JPEG with the size in its SOF header replaced; the scan data stays the small image's.
std::vector<uint8_t> with_declared_size(std::vector<uint8_t> jpeg, int w, int h) {
  for (size_t i = 2; i + 9 < jpeg.size();) {
    REQUIRE(jpeg[i] == 0xff);
    const uint8_t marker = jpeg[i + 1];
    const size_t length = size_t(jpeg[i + 2]) << 8 | jpeg[i + 3];
    if (marker == 0xc0 || marker == 0xc2) {
      jpeg[i + 5] = uint8_t(h >> 8), jpeg[i + 6] = uint8_t(h), jpeg[i + 7] = uint8_t(w >> 8), jpeg[i + 8] = uint8_t(w);
      return jpeg;
    }
    i += 2 + length;
  }
  FAIL("no SOF marker");
  return jpeg;
}

std::string decode_error(const std::vector<uint8_t>& b, int channels, int min_short) {
  try {
    decode_image(b.data(), b.size(), channels, min_short);
  } catch (const DecodeError& e) {
    return e.what();
  }
  return "";
}

double mean_abs_diff(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  REQUIRE(a.size() == b.size());
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += std::abs(int(a[i]) - int(b[i]));
  return s / double(a.size());
}

// A decoded-image cache file (image_cache.h layout) with the given JSON header and one
// 2x2 image per split.
std::vector<uint8_t> cache_with_header(const std::string& json, int channels) {
  std::vector<uint8_t> f = {'V', 'K', 'Q', 'A', 'T', 'I', 'C', '1'};
  const uint64_t pixels = 2 * 4 * uint64_t(channels), footer = 16 + pixels, json_len = json.size();
  auto put = [&f](const void* p, size_t n) { f.insert(f.end(), (const uint8_t*)p, (const uint8_t*)p + n); };
  put(&footer, 8);
  f.resize(footer, 100);
  put(&json_len, 8);
  put(json.data(), json.size());
  f.resize((f.size() + 7) / 8 * 8, 0);
  for (uint32_t split = 0; split < 2; ++split) {
    const uint64_t offset = 16 + split * 4 * uint64_t(channels);
    const uint32_t rest[4] = {2, 2, split, split};  // height, width, label, split
    put(&offset, 8);
    put(rest, 16);
  }
  return f;
}

}  // namespace

TEST_CASE("libjpeg encoder: a gray image gives a 1-component JPEG, RGB and progressive decode back" *
          doctest::test_suite("image")) {
  const std::vector<uint8_t> gray = test::pattern(40, 30, 1, 3);
  const std::vector<uint8_t> g = encode_jpeg(gray.data(), 40, 30, 1, 95);
  const ImageInfo gi = probe_image(g.data(), g.size());
  CHECK(gi.format == ImageFormat::Jpeg);
  CHECK(gi.channels == 1);  // stbi_write_jpg would say 3 here
  const Image gd = decode_image(g.data(), g.size(), 1);
  CHECK(gd.width == 40);
  CHECK(gd.height == 30);
  CHECK(mean_abs_diff(gd.pixels, gray) < 4.0);
  const std::vector<uint8_t> rgb = test::pattern(64, 48, 3, 1);
  const std::vector<uint8_t> baseline = encode_jpeg(rgb.data(), 64, 48, 3, 95);
  const std::vector<uint8_t> progressive = encode_jpeg(rgb.data(), 64, 48, 3, 95, true);
  CHECK(probe_image(baseline.data(), baseline.size()).channels == 3);
  const Image b = decode_image(baseline.data(), baseline.size(), 3);
  CHECK(mean_abs_diff(b.pixels, rgb) < 8.0);  // 4:2:0 chroma; unrelated images differ by ~85
  // The same quantized coefficients, sent in several scans: the same pixels.
  CHECK(decode_image(progressive.data(), progressive.size(), 3).pixels == b.pixels);
  for (const auto* j : {&baseline, &progressive}) {
    const Image small = decode_image(j->data(), j->size(), 3, 12);  // reduced DCT: 2/8 -> 16x12
    CHECK(small.width == 16);
    CHECK(small.height == 12);
  }
  CHECK_THROWS_AS(encode_jpeg(rgb.data(), 64, 48, 2, 95), Error);
  CHECK_THROWS_AS(encode_jpeg(rgb.data(), 64, 48, 3, 0), Error);
}

TEST_CASE("JPEG headers declaring 30000x30000 are refused before the memory is taken" * doctest::test_suite("image")) {
  const std::vector<uint8_t> rgb = test::pattern(32, 32, 3, 0);
  const std::vector<uint8_t> baseline = with_declared_size(encode_jpeg(rgb.data(), 32, 32, 3, 90), 30000, 30000);
  const std::vector<uint8_t> progressive =
      with_declared_size(encode_jpeg(rgb.data(), 32, 32, 3, 90, true), 30000, 30000);
  // Full scale: 900 MP of output is over kMaxDecodePixels.
  CHECK(decode_error(baseline, 3, 0).find("too large") != std::string::npos);
  CHECK(decode_error(progressive, 3, 0).find("too large") != std::string::npos);
  // At 1/8 (3750x3750 out) a baseline JPEG needs only row buffers and fails on its missing
  // data; a progressive one needs the whole image's coefficients (2.7 GB), which used to
  // be allocated before the truncation was noticed.
  CHECK(decode_error(baseline, 3, 32).find("corrupt or truncated JPEG") != std::string::npos);
  const std::string err = decode_error(progressive, 3, 32);
  CHECK_MESSAGE(err.find("too large") != std::string::npos, err);
  CHECK(err.find("corrupt") == std::string::npos);
  // The header alone is fine: probing does not decode.
  CHECK(probe_image(progressive.data(), progressive.size()).width == 30000);
}

TEST_CASE("image cache header: numbers are checked, not converted blindly" * doctest::test_suite("image")) {
  TempFolder t;
  auto open = [&t](const std::string& json, int channels) {
    test::write_bytes(t / "c.vkqc", cache_with_header(json, channels));
    return MappedCache(t / "c.vkqc");
  };
  const MappedCache ok = open(R"({"base_size": 2, "channels": 3, "classes": ["a", "b"]})", 3);
  CHECK(ok.base_size() == 2);
  CHECK(ok.records().size() == 2);
  // A float where an int belongs was undefined behaviour (nlohmann's static_cast).
  CHECK_THROWS_WITH_AS(open(R"({"base_size": 7.7e73, "channels": 3, "classes": ["a", "b"]})", 3),
                       doctest::Contains("base_size"), Error);
  CHECK_THROWS_WITH_AS(open(R"({"base_size": 2, "channels": 1e300, "classes": ["a", "b"]})", 3),
                       doctest::Contains("channels"), Error);
  // A base size the writer never produces (> 4096) would size every batch buffer from it.
  CHECK_THROWS_WITH_AS(open(R"({"base_size": 2000000000, "channels": 1, "classes": ["a", "b"]})", 1),
                       doctest::Contains("corrupt cache header"), Error);
}

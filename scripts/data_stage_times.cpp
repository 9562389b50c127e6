// Microseconds per image of each stage of the image-folder pipeline (one thread, 224 px
// RandomResizedCrop + flip from a 256 base, as `vkqat bench --only data`): file read, JPEG
// decode, base resize, crop resize + flip + CHW (the cache path starts here), conversion to
// normalized floats (a plain division loop standing in for the loader's lookup table).
//
//   cmake --build build --target vkqat_nn vkqat_backend
//   g++ -O2 -std=c++17 -I src scripts/data_stage_times.cpp build/libvkqat_nn.a build/libvkqat_backend.a -lyuv -ljpeg -lstb -lvulkan -lpthread -o /tmp/data_stage_times
//   /tmp/data_stage_times /tmp/jpegs/train      # the folder `vkqat bench --only data --data-dir /tmp/jpegs` keeps
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <random>
#include <stdexcept>
#include <string>
#include "nn/data/image_decode.h"
#include "nn/data/image_folder.h"
#include "nn/data/image_transform.h"
using namespace vkqat::nn;
using clk = std::chrono::steady_clock;
static double us(clk::time_point a, clk::time_point b) { return std::chrono::duration<double, std::micro>(b - a).count(); }
static int run(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s JPEG_FOLDER\n", argv[0]);
    return 2;
  }
  std::vector<std::string> files;
  for (auto& e : std::filesystem::recursive_directory_iterator(argv[1]))
    if (e.is_regular_file() && e.path().extension() == ".jpg") files.push_back(e.path().string());
  ImageTransform t; t.mode = AugmentMode::ImageNet; t.size = 224; t.channels = 3;
  std::vector<uint8_t> bytes, out(3 * 224 * 224); std::vector<float> f(out.size());
  Image dec, res;
  double tr = 0, td = 0, tb = 0, ta = 0, tf = 0; int n = 0;
  for (int round = 0; round < 2; ++round)
    for (auto& p : files) {
      auto t0 = clk::now();
      read_whole_file(p, bytes);
      auto t1 = clk::now();
      decode_image_into(bytes.data(), bytes.size(), 3, t.base_size(), dec);
      auto t2 = clk::now();
      const Image& b = t.to_base(dec, res);
      auto t3 = clk::now();
      std::mt19937_64 rng(n);
      t.apply(b.pixels.data(), b.height, b.width, true, rng, out.data());
      auto t4 = clk::now();
      for (size_t k = 0; k < out.size(); ++k) f[k] = (float(out[k]) / 255.0f - 0.45f) / 0.225f;
      auto t5 = clk::now();
      if (round) { tr += us(t0, t1); td += us(t1, t2); tb += us(t2, t3); ta += us(t3, t4); tf += us(t4, t5); ++n; }
    }
  if (n == 0) throw std::runtime_error(std::string(argv[1]) + ": no .jpg files");
  std::printf("%d images: read %.0f us, decode %.0f us (%dx%d), base resize %.0f us (%dx%d), crop+resize+flip+CHW %.0f us, to float %.0f us\n",
              n, tr / n, td / n, dec.width, dec.height, tb / n, res.width, res.height, ta / n, tf / n);
  return 0;
}

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "data_stage_times: %s\n", e.what());
    return 1;
  }
}

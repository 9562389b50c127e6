// The data-pipeline benchmark. See data_bench.h.
#include "nn/data/data_bench.h"

#include <stb/stb_image_write.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <random>
#include <thread>

#include "backend/error.h"
#include "nn/data/image_cache.h"
#include "nn/data/image_folder.h"
#include "nn/data/loader.h"

namespace fs = std::filesystem;

namespace vkqat::nn {
namespace {

// Photo-like content: smooth shapes plus sensor-like noise, so the JPEGs have the size
// and entropy of real pictures (about 60-90 KB at quality 90 for 500x375) rather than the
// few KB of a pure gradient.
void write_photo_jpeg(const std::string& path, int w, int h, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> noise(0.f, 14.f);
  const float fx = 0.01f + 0.03f * float(rng() % 100) / 100.f, fy = 0.01f + 0.03f * float(rng() % 100) / 100.f;
  const float cx = float(rng() % unsigned(w)), cy = float(rng() % unsigned(h));
  std::vector<uint8_t> px(size_t(w) * h * 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      const float r = std::hypot(x - cx, y - cy);
      for (int c = 0; c < 3; ++c) {
        float v = 128 + 60 * std::sin(fx * x * (c + 1) + fy * y) + 40 * std::cos(r * 0.05f + c) + noise(rng);
        px[(size_t(y) * w + x) * 3 + c] = uint8_t(std::clamp(v, 0.f, 255.f));
      }
    }
  if (!stbi_write_jpg(path.c_str(), w, h, 3, px.data(), 90)) throw Error(path + ": cannot write");
}

struct Measured {
  double images_per_s = 0, seconds = 0;
  int images = 0;
};

// Loads batches of a streamed training set for at least `min_images` images (whole epochs).
Measured drain(const Dataset& d, int batch, int min_images) {
  BatchLoader loader(d, batch, true, 0);
  Batch b;
  Measured m;
  const auto t0 = std::chrono::steady_clock::now();
  for (int epoch = 0; m.images < min_images; ++epoch) {
    loader.start_epoch(epoch);
    while (loader.next(b)) m.images += b.size;
  }
  m.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  m.images_per_s = m.images / m.seconds;
  return m;
}

}  // namespace

std::vector<BenchRecord> bench_data_pipeline(bool quick, const std::string& keep_dir) {
  const int per_class = quick ? 32 : 128, S = 224, batch = 32;
  const bool keep = !keep_dir.empty();
  const fs::path root = keep ? fs::path(keep_dir) : fs::temp_directory_path() / ("vkqat-bench-data-" + std::to_string(::getpid()));
  const bool reuse = keep && fs::exists(root / "train");
  if (!keep) fs::remove_all(root);
  if (keep && !reuse && fs::exists(root) && !fs::is_empty(root))
    throw Error("--data-dir " + keep_dir + ": exists, is not empty and has no train/ folder (give a new or empty directory)");
  uintmax_t jpeg_bytes = 0;
  for (const char* split : {"train", "val"})
    for (int c = 0; c < 2; ++c) {
      const fs::path dir = root / split / ("class" + std::to_string(c));
      std::error_code ec;
      fs::create_directories(dir, ec);
      if (ec) throw Error((keep ? "--data-dir " : "bench data folder ") + dir.string() + ": cannot create: " + ec.message());
      const int n = std::string(split) == "train" ? per_class : 2;
      for (int i = 0; i < n; ++i) {
        const std::string f = (dir / (std::to_string(i) + ".jpg")).string();
        if (!reuse || !fs::exists(f)) write_photo_jpeg(f, 500, 375, uint64_t(c) * 100000 + i);
        jpeg_bytes += fs::file_size(f);
      }
    }
  const int files = 2 * per_class + 4;
  const int cores = int(std::max(1u, std::thread::hardware_concurrency()));
  std::vector<BenchRecord> out;
  auto record = [&](const std::string& name, const Measured& m, const std::string& note) {
    BenchRecord r;
    r.name = name;
    r.ms = 1000.0 / m.images_per_s;  // per image
    r.images_per_s = m.images_per_s;
    r.variant = note;
    out.push_back(r);
  };
  char note[160];
  std::snprintf(note, sizeof note, "%d JPEGs 500x375 q90, mean %.0f KB", files, double(jpeg_bytes) / files / 1024);
  const int min_images = 2 * 2 * per_class;
  try {
    for (int workers : {1, cores}) {
      if (workers == 1 && cores == 1 && !out.empty()) break;
      DataOptions o;
      o.image_size = S;
      o.augment = "imagenet";
      o.workers = workers;
      auto [tr, va] = load_image_folder(root.string(), o);
      const Measured m = drain(tr, batch, min_images);
      record("data jpeg -> 224 RandomResizedCrop+flip, " + std::to_string(workers) + " worker" + (workers > 1 ? "s" : ""),
             m, std::string(note) + (workers > 1 ? ", per core " + std::to_string(int(m.images_per_s / workers)) + " img/s" : ""));
    }
    DataOptions co;
    co.workers = cores;
    const std::string cache = (root / "cache.vkqc").string();
    const CacheWriteReport w = write_image_cache(root.string(), 256, cache, co);
    for (int workers : {1, cores}) {
      DataOptions o;
      o.image_size = S;
      o.augment = "imagenet";
      o.workers = workers;
      auto [tr, va] = load_image_cache(cache, o);
      const Measured m = drain(tr, batch, min_images * 2);
      char n2[160];
      std::snprintf(n2, sizeof n2, "cache of shorter side 256 (%.1f MB, written in %.1f s)", w.bytes / 1e6, w.seconds);
      record("data cache -> 224 RandomResizedCrop+flip, " + std::to_string(workers) + " worker" + (workers > 1 ? "s" : ""),
             m, n2);
    }
  } catch (...) {
    if (!keep) fs::remove_all(root);
    throw;
  }
  if (keep)
    fs::remove(root / "cache.vkqc");
  else
    fs::remove_all(root);
  return out;
}

}  // namespace vkqat::nn

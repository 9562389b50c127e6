// `vkqat data info PATH`, `vkqat data cache PATH --size S --out FILE`, `vkqat data export`:
// inspecting image folders / caches / built-in sets, packing a folder into a decoded-image
// cache, and writing a built-in set out as an image folder (PNG or JPEG).
#include <stb/stb_image_write.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <thread>

#include "backend/error.h"
#include "commands.h"
#include "nn/data/dataset.h"
#include "nn/data/image_cache.h"
#include "nn/data/image_decode.h"
#include "nn/data/image_encode.h"
#include "nn/data/image_folder.h"

namespace fs = std::filesystem;

namespace vkqat::cli {
namespace {

struct DataArgs {
  std::string path, out, format = "png";
  nn::DataOptions opt;
  int size = 0, quality = 95, limit = 0;
  bool json = false;
};

bool is_builtin(const std::string& p) {
  for (const char* n : {"fashion-mnist", "mnist", "cifar10", "cifar100", "cifar100-coarse"})
    if (p == n) return true;
  return false;
}

std::string size_stats(std::vector<int> v) {
  if (v.empty()) return "-";
  std::sort(v.begin(), v.end());
  return std::to_string(v.front()) + " / " + std::to_string(v[v.size() / 2]) + " / " + std::to_string(v.back());
}

// Decodes every file (reduced DCT scale: the whole entropy stream is still checked) on
// `workers` threads; returns the files that fail, with the reason.
std::vector<std::pair<std::string, std::string>> full_decode_check(const std::vector<nn::FolderEntry>& files,
                                                                     int channels, int workers) {
  std::vector<std::string> errors(files.size());
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i; (i = next.fetch_add(1)) < files.size();) {
      try {
        std::vector<uint8_t> b = nn::read_whole_file(files[i].path);
        nn::decode_image(b.data(), b.size(), channels, 1);
      } catch (const std::exception& e) {
        errors[i] = e.what();
      }
    }
  };
  std::vector<std::thread> pool;
  for (int w = 1; w < workers; ++w) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
  std::vector<std::pair<std::string, std::string>> bad;
  for (size_t i = 0; i < files.size(); ++i)
    if (!errors[i].empty()) bad.push_back({files[i].path, errors[i]});
  return bad;
}

int info_builtin(const DataArgs& a) {
  auto [tr, te] = nn::load_dataset_splits(a.path, "", {});
  std::printf("%s: %d x %d x %d images, %d classes; train %d, test %d\n", a.path.c_str(), tr.channels, tr.height,
              tr.width, tr.classes, tr.n, te.n);
  return 0;
}

int info_cache(const DataArgs& a) {
  nn::MappedCache c(a.path);
  std::map<uint32_t, int> train, val;
  std::vector<int> hs, ws;
  for (const nn::CacheRecord& r : c.records()) {
    (r.split ? val : train)[r.label]++;
    hs.push_back(int(r.height)), ws.push_back(int(r.width));
  }
  std::printf("%s: vkqat image cache of %s, shorter side %d, %d channel(s), %zu images\n", a.path.c_str(),
              c.source().c_str(), c.base_size(), c.channels(), c.records().size());
  std::printf("%-4s %-24s %8s %8s\n", "id", "class", "train", "val");
  for (size_t k = 0; k < c.classes().size(); ++k)
    std::printf("%-4zu %-24s %8d %8d\n", k, c.classes()[k].c_str(), train[uint32_t(k)], val[uint32_t(k)]);
  std::printf("height min/median/max: %s   width: %s\n", size_stats(hs).c_str(), size_stats(ws).c_str());
  return 0;
}

int info_folder(const DataArgs& a) {
  nn::FolderScan s = nn::scan_image_folder(a.path, a.opt.val_split, false, /*print=*/false);
  const int channels = nn::folder_channels(s, a.opt.in_channels);
  std::vector<nn::FolderEntry> all = s.train;
  all.insert(all.end(), s.val.begin(), s.val.end());
  auto bad = full_decode_check(all, channels, a.opt.resolved_workers());
  bad.insert(bad.begin(), s.bad.begin(), s.bad.end());
  std::map<uint32_t, int> train, val;
  for (const auto& e : s.train) train[e.label]++;
  for (const auto& e : s.val) val[e.label]++;
  std::vector<int> hs, ws;
  std::map<std::string, int> formats;
  int gray = 0;
  for (const auto& e : all) {
    hs.push_back(e.info.height), ws.push_back(e.info.width);
    formats[nn::format_name(e.info.format)]++;
    gray += e.info.channels == 1;
  }
  if (a.json) {
    nlohmann::json j = {{"path", a.path}, {"classes", s.classes}, {"channels", channels}};
    nlohmann::json counts = nlohmann::json::array();
    for (size_t k = 0; k < s.classes.size(); ++k) counts.push_back({{"train", train[uint32_t(k)]}, {"val", val[uint32_t(k)]}});
    j["counts"] = counts;
    j["formats"] = formats;
    j["grayscale_images"] = gray;
    j["unreadable"] = nlohmann::json::array();
    for (auto& [f, why] : bad) j["unreadable"].push_back({{"file", f}, {"reason", why}});
    j["warnings"] = s.warnings;
    std::cout << j.dump(2) << "\n";
    return 0;
  }
  std::printf("%s: %zu classes, %zu train + %zu %s images, %d channel(s) for training\n", a.path.c_str(),
              s.classes.size(), s.train.size(), s.val.size(), s.has_val_dir ? "val" : "held-out (--val-split)",
              channels);
  std::printf("%-4s %-24s %8s %8s\n", "id", "class", "train", "val");
  for (size_t k = 0; k < s.classes.size(); ++k)
    std::printf("%-4zu %-24s %8d %8d\n", k, s.classes[k].c_str(), train[uint32_t(k)], val[uint32_t(k)]);
  std::printf("height min/median/max: %s   width: %s\n", size_stats(hs).c_str(), size_stats(ws).c_str());
  std::printf("formats:");
  for (auto& [f, n] : formats) std::printf(" %s %d", f.c_str(), n);
  std::printf("   grayscale: %d of %zu\n", gray, all.size());
  for (const std::string& w : s.warnings)
    if (w.find("unreadable files skipped") == std::string::npos && w.find(", skipped") == std::string::npos)
      std::printf("warning: %s\n", w.c_str());
  std::printf("unreadable files: %zu\n", bad.size());
  for (auto& [f, why] : bad) std::printf("  %s: %s\n", f.c_str(), why.c_str());
  return 0;
}

int run_info(const DataArgs& a) {
  if (is_builtin(a.path)) return info_builtin(a);
  std::error_code ec;
  if (!fs::exists(a.path, ec)) throw Error(a.path + ": no such file or folder (nor a built-in dataset name)");
  if (fs::is_regular_file(a.path, ec)) return info_cache(a);
  return info_folder(a);
}

int run_cache(const DataArgs& a) {
  const nn::CacheWriteReport r = nn::write_image_cache(a.path, a.size, a.out, a.opt);
  std::printf("%s: %d train + %d val images of shorter side %d, %.1f MB, %d unreadable skipped, %.1f s (%.0f images/s)\n",
              a.out.c_str(), r.train, r.val, a.size, r.bytes / 1e6, r.skipped, r.seconds,
              (r.train + r.val) / std::max(1e-9, r.seconds));
  return 0;
}

// A built-in dataset as ROOT/{train,val}/<class>/<index>.<png|jpg> (val = its test split).
int run_export(const DataArgs& a) {
  if (!is_builtin(a.path)) throw Error("data export: " + a.path + " is not a built-in dataset (fashion-mnist, mnist, cifar10, cifar100, cifar100-coarse)");
  if (a.format != "png" && a.format != "jpg") throw Error("--format " + a.format + ": expected png or jpg");
  if (a.quality < 1 || a.quality > 100) throw Error("--quality: expected 1..100");
  auto [tr, te] = nn::load_dataset_splits(a.path, "", {});
  for (auto [split, d] : {std::pair{"train", &tr}, std::pair{"val", &te}}) {
    const int n = a.limit > 0 ? std::min(a.limit, d->n) : d->n;
    const int C = d->channels, H = d->height, W = d->width;
    std::vector<uint8_t> hwc(size_t(C) * H * W);
    for (int i = 0; i < n; ++i) {
      const uint8_t* chw = d->image(i);
      for (int c = 0; c < C; ++c)
        for (int p = 0; p < H * W; ++p) hwc[size_t(p) * C + c] = chw[size_t(c) * H * W + p];
      const int label = d->labels[size_t(i)];
      const std::string cls = d->class_names.empty() ? (label < 10 ? "0" : "") + std::to_string(label) : d->class_names[size_t(label)];
      const fs::path dir = fs::path(a.out) / split / cls;
      fs::create_directories(dir);
      char name[32];
      std::snprintf(name, sizeof name, "%05d.%s", i, a.format.c_str());
      const std::string f = (dir / name).string();
      if (a.format == "png") {
        if (!stbi_write_png(f.c_str(), W, H, C, hwc.data(), W * C)) throw Error(f + ": cannot write");
      } else {  // libjpeg-turbo: a 1-component JPEG for gray sets (stbi_write_jpg always writes 3)
        const std::vector<uint8_t> jpg = nn::encode_jpeg(hwc.data(), W, H, C, a.quality);
        std::ofstream out(f, std::ios::binary);
        out.write(reinterpret_cast<const char*>(jpg.data()), std::streamsize(jpg.size()));
        out.close();
        if (!out) throw Error(f + ": cannot write");
      }
    }
    std::printf("%s/%s: %d images\n", a.out.c_str(), split, n);
  }
  return 0;
}

}  // namespace

void add_data_command(CLI::App& app, Actions& actions) {
  auto* data = app.add_subcommand("data", "inspect image folders and caches, build a decoded-image cache, export a built-in set");
  data->require_subcommand(1);

  auto info = std::make_shared<DataArgs>();
  auto* i = data->add_subcommand("info", "classes, counts, image sizes and unreadable files of a folder, a cache or a built-in set");
  i->add_option("path", info->path, "image folder (ROOT/train/<class>/...), cache file, or fashion-mnist | mnist | cifar10 | cifar100")->required();
  i->add_option("--val-split", info->opt.val_split, "folder without val/: the held-out fraction");
  i->add_option("--workers", info->opt.workers, "decode threads (default: every core)");
  i->add_flag("--json", info->json, "machine-readable output (folders)");
  i->callback([&actions, info] { actions.push_back([info] { return run_info(*info); }); });

  auto cache = std::make_shared<DataArgs>();
  auto* c = data->add_subcommand("cache", "decode an image folder once into one memory-mapped file (train with --data cache --data-dir FILE)");
  c->add_option("path", cache->path, "image folder")->required();
  c->add_option("--size", cache->size, "shorter side of the stored images (the training --image-size; 256 for --augment imagenet at 224)")->required();
  c->add_option("--out", cache->out, "cache file to write")->required();
  c->add_option("--val-split", cache->opt.val_split, "folder without val/: the held-out fraction");
  c->add_option("--in-channels", cache->opt.in_channels, "1 or 3 (default: 1 if every image is grayscale, else 3)");
  c->add_option("--workers", cache->opt.workers, "decode threads (default: every core)");
  c->add_flag("--strict", cache->opt.strict, "unreadable files are fatal instead of skipped");
  c->callback([&actions, cache] { actions.push_back([cache] { return run_cache(*cache); }); });

  auto ex = std::make_shared<DataArgs>();
  auto* e = data->add_subcommand("export", "write a built-in dataset as an image folder (OUT/train/<class>/, OUT/val/<class>/)");
  e->add_option("path", ex->path, "fashion-mnist | mnist | cifar10 | cifar100 | cifar100-coarse")->required();
  e->add_option("--out", ex->out, "folder to write")->required();
  e->add_option("--format", ex->format, "png | jpg")->capture_default_str();
  e->add_option("--quality", ex->quality, "JPEG quality")->capture_default_str();
  e->add_option("--limit", ex->limit, "only the first K images of each split");
  e->callback([&actions, ex] { actions.push_back([ex] { return run_export(*ex); }); });
}

}  // namespace vkqat::cli

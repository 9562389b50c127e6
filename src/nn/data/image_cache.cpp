// Writing and memory-mapping decoded-image caches. See image_cache.h.
#include "nn/data/image_cache.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <thread>

#include "backend/error.h"
#include "nn/data/image_folder.h"
#include "nn/json_number.h"

namespace vkqat::nn {
namespace {

const char kMagic[8] = {'V', 'K', 'Q', 'A', 'T', 'I', 'C', '1'};
constexpr size_t kRecordBytes = 24;
constexpr int kMaxBaseSize = 4096;  // written and read: a larger header value is corruption

uint64_t get_u64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}
uint32_t get_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

}  // namespace

MappedCache::MappedCache(const std::string& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(path + ": cannot open cache: " + std::strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(path + ": not a regular file");
  }
  size_ = size_t(st.st_size);
  if (size_ < 16) {
    ::close(fd);
    throw Error(path + ": too short for a vkqat image cache (" + std::to_string(size_) + " bytes)");
  }
  void* m = mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (m == MAP_FAILED) throw Error(path + ": cannot map: " + std::strerror(errno));
  data_ = static_cast<const uint8_t*>(m);
  try {
    if (std::memcmp(data_, kMagic, 8) != 0) throw Error(path + ": not a vkqat image cache (bad magic)");
    const uint64_t footer = get_u64(data_ + 8);
    if (footer < 16 || footer > size_ - 8) throw Error(path + ": corrupt cache (footer offset " + std::to_string(footer) + ")");
    const uint64_t json_len = get_u64(data_ + footer);
    if (json_len > size_ - footer - 8) throw Error(path + ": corrupt cache (header length)");
    nlohmann::json h = nlohmann::json::parse(data_ + footer + 8, data_ + footer + 8 + json_len, nullptr, false);
    if (h.is_discarded() || !h.is_object()) throw Error(path + ": corrupt cache (header JSON)");
    try {
      base_size_ = json_int<int>(h.at("base_size"), "base_size");  // not h.at(): a float would be UB
      channels_ = json_int<int>(h.at("channels"), "channels");
      classes_ = h.at("classes").get<std::vector<std::string>>();
      source_ = h.value("source", std::string());
    } catch (const nlohmann::json::exception& e) {
      throw Error(path + ": corrupt cache header: " + e.what());
    } catch (const Error& e) {
      throw Error(path + ": corrupt cache header: " + e.what());
    }
    if ((channels_ != 1 && channels_ != 3) || base_size_ < 1 || base_size_ > kMaxBaseSize || classes_.size() < 2)
      throw Error(path + ": corrupt cache header (channels, size or classes)");
    const uint64_t index = (footer + 8 + json_len + 7) / 8 * 8;
    if (index > size_ || (size_ - index) % kRecordBytes != 0) throw Error(path + ": corrupt cache (index size)");
    const size_t n = (size_ - index) / kRecordBytes;
    records_.resize(n);
    for (size_t i = 0; i < n; ++i) {
      const uint8_t* p = data_ + index + i * kRecordBytes;
      CacheRecord r{get_u64(p), get_u32(p + 8), get_u32(p + 12), get_u32(p + 16), get_u32(p + 20)};
      const uint64_t bytes = uint64_t(r.height) * r.width * uint64_t(channels_);
      if (r.height == 0 || r.width == 0 || r.height > 65536 || r.width > 65536 || r.offset < 16 || r.offset > footer ||
          bytes > footer - r.offset || r.label >= classes_.size() || r.split > 1)
        throw Error(path + ": corrupt cache (record " + std::to_string(i) + ")");
      records_[i] = r;
    }
  } catch (...) {
    munmap(const_cast<uint8_t*>(data_), size_);
    throw;
  }
}

MappedCache::~MappedCache() { munmap(const_cast<uint8_t*>(data_), size_); }

CacheSource::CacheSource(std::shared_ptr<const MappedCache> cache, uint32_t split, ImageTransform t, int workers)
    : cache_(std::move(cache)), t_(t), workers_(std::max(1, workers)) {
  const auto& recs = cache_->records();
  for (size_t i = 0; i < recs.size(); ++i)
    if (recs[i].split == split) index_.push_back(uint32_t(i));
}

std::string CacheSource::describe(int i) const {
  return cache_->path() + " record " + std::to_string(index_[size_t(i)]);
}

uint32_t CacheSource::produce(int i, bool train, uint64_t rng_seed, uint8_t* out) const {
  const CacheRecord& r = rec(i);
  std::mt19937_64 rng(rng_seed);
  t_.apply(cache_->pixels(r), int(r.height), int(r.width), train, rng, out);
  return r.label;
}

CacheWriteReport write_image_cache(const std::string& root, int base_size, const std::string& out_path,
                                   const DataOptions& o) {
  o.validate();
  if (base_size < 2 || base_size > kMaxBaseSize)
    throw Error("--size " + std::to_string(base_size) + ": expected 2.." + std::to_string(kMaxBaseSize));
  const auto t0 = std::chrono::steady_clock::now();
  FolderScan scan = scan_image_folder(root, o.val_split, o.strict);
  // The base transform of a folder whose base size is `base_size` (mode none, size = base).
  ImageTransform t;
  t.size = base_size;
  t.channels = folder_channels(scan, o.in_channels);
  std::vector<FolderEntry> all = scan.train;
  std::vector<uint32_t> split(scan.train.size(), 0);
  all.insert(all.end(), scan.val.begin(), scan.val.end());
  split.resize(all.size(), 1);
  FolderSource src(all, t, o.resolved_workers(), o.strict);

  const std::string tmp = out_path + ".tmp";
  std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
  if (!f) throw Error(out_path + ": cannot write: " + std::strerror(errno));
  uint64_t zero = 0;
  f.write(kMagic, 8);
  f.write(reinterpret_cast<const char*>(&zero), 8);
  uint64_t offset = 16;

  // Decode in chunks on the worker threads, write each chunk in order: memory stays at
  // one chunk of base images whatever the folder's size.
  const int workers = o.resolved_workers();
  const size_t chunk = size_t(workers) * 16;
  std::vector<Image> images(chunk);
  std::vector<std::string> errors(chunk);
  std::vector<CacheRecord> records;
  CacheWriteReport rep;
  for (size_t start = 0; start < all.size(); start += chunk) {
    const size_t count = std::min(chunk, all.size() - start);
    std::atomic<size_t> next{0};
    auto work = [&] {
      for (size_t k; (k = next.fetch_add(1)) < count;) {
        errors[k].clear();
        try {
          images[k] = src.base_image(int(start + k));
        } catch (const Error& e) {
          errors[k] = e.what();
        }
      }
    };
    std::vector<std::thread> pool;
    for (int w = 1; w < workers; ++w) pool.emplace_back(work);
    work();
    for (auto& th : pool) th.join();
    for (size_t k = 0; k < count; ++k) {
      if (!errors[k].empty()) {
        if (o.strict) throw Error(errors[k] + " (--strict)");
        std::fprintf(stderr, "vkqat: warning: %s, skipped\n", errors[k].c_str());
        ++rep.skipped;
        continue;
      }
      const Image& im = images[k];
      f.write(reinterpret_cast<const char*>(im.pixels.data()), std::streamsize(im.pixels.size()));
      const uint32_t sp = split[start + k];
      records.push_back({offset, uint32_t(im.height), uint32_t(im.width), all[start + k].label, sp});
      offset += im.pixels.size();
      (sp ? rep.val : rep.train)++;
      images[k] = Image();
    }
  }
  const size_t skipped_at_scan = scan.bad.size();
  nlohmann::json h = {{"format", "vkqat-image-cache-1"},
                      {"base_size", base_size},
                      {"channels", t.channels},
                      {"classes", scan.classes},
                      {"counts", {{"train", rep.train}, {"val", rep.val}}},
                      {"skipped", rep.skipped + skipped_at_scan},
                      {"val_split", scan.has_val_dir ? 0.0 : o.val_split},
                      {"source", root}};
  const std::string js = h.dump();
  const uint64_t footer = offset, len = js.size();
  f.write(reinterpret_cast<const char*>(&len), 8);
  f.write(js.data(), std::streamsize(js.size()));
  const uint64_t pad = (8 - (footer + 8 + len) % 8) % 8;
  f.write("\0\0\0\0\0\0\0\0", std::streamsize(pad));
  for (const CacheRecord& r : records) {
    f.write(reinterpret_cast<const char*>(&r.offset), 8);
    f.write(reinterpret_cast<const char*>(&r.height), 4);
    f.write(reinterpret_cast<const char*>(&r.width), 4);
    f.write(reinterpret_cast<const char*>(&r.label), 4);
    f.write(reinterpret_cast<const char*>(&r.split), 4);
  }
  f.seekp(8);
  f.write(reinterpret_cast<const char*>(&footer), 8);
  f.close();
  if (!f) throw Error(out_path + ": write error");
  if (std::rename(tmp.c_str(), out_path.c_str()) != 0)
    throw Error("cannot rename " + tmp + " to " + out_path + ": " + std::strerror(errno));
  rep.skipped += int(skipped_at_scan);
  rep.bytes = offset + 8 + len + pad + records.size() * kRecordBytes;
  rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return rep;
}

std::pair<Dataset, Dataset> load_image_cache(const std::string& path, const DataOptions& o) {
  auto cache = std::make_shared<const MappedCache>(path);
  if (o.val_split != 0) throw Error("--val-split: a cache keeps the split it was written with (" + path + ")");
  if (o.in_channels != 0 && o.in_channels != cache->channels())
    throw Error("--in-channels " + std::to_string(o.in_channels) + ": " + path + " holds " +
                std::to_string(cache->channels()) + "-channel images");
  ImageTransform t;
  t.mode = o.augment.empty() ? AugmentMode::None : parse_augment_mode(o.augment);
  t.channels = cache->channels();
  const int b = cache->base_size();
  t.size = o.image_size > 0 ? o.image_size : (t.mode == AugmentMode::ImageNet ? int(std::lround(b * 0.875)) : b);
  if (t.base_size() != b)
    std::fprintf(stderr,
                 "vkqat: note: %s holds images of shorter side %d; --image-size %d with --augment %s resizes to %d "
                 "from an image folder, so batches differ from the folder's\n",
                 path.c_str(), b, t.size, augment_mode_name(t.mode), t.base_size());
  auto make = [&](uint32_t split) {
    Dataset d;
    d.name = "cache";
    d.channels = t.channels;
    d.height = d.width = t.size;
    d.classes = int(cache->classes().size());
    d.class_names = cache->classes();
    imagenet_normalization(t.channels, d.mean, d.std);
    apply_normalization_options(d, o);
    d.source = std::make_shared<CacheSource>(cache, split, t, o.resolved_workers());
    d.n = d.source->size();
    return d;
  };
  std::pair<Dataset, Dataset> p{make(0), make(1)};
  if (p.first.n == 0) throw Error(path + ": no training images in the cache");
  if (p.second.n == 0) throw Error(path + ": no validation images in the cache");
  return p;
}

}  // namespace vkqat::nn

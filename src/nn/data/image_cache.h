#pragma once
// Decoded-image cache: an image folder's base images (image_transform.h: decoded, shorter
// side resized to one size) packed into one file and memory-mapped at training time, so
// an epoch costs no decoding and the same images give the same batches as the folder.
//
// File layout (little-endian):
//   "VKQATIC1"  u64 footer_offset
//   pixels: every image's HWC uint8 bytes, back to back
//   footer: u64 json_length, JSON header ({"base_size", "channels", "classes",
//           "counts": {"train", "val"}, "source", "augment_base_of"...}), zero padding
//           to 8 bytes, then one 24-byte record per image:
//           u64 offset, u32 height, u32 width, u32 label, u32 split (0 train, 1 val)
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "nn/data/data_options.h"
#include "nn/data/dataset.h"
#include "nn/data/image_source.h"

namespace vkqat::nn {

struct CacheRecord {
  uint64_t offset;
  uint32_t height, width, label, split;
};

// The mapped file (shared by the train and val sources of one cache).
class MappedCache {
 public:
  explicit MappedCache(const std::string& path);  // throws Error naming the file
  ~MappedCache();
  MappedCache(const MappedCache&) = delete;
  MappedCache& operator=(const MappedCache&) = delete;
  const std::string& path() const { return path_; }
  int base_size() const { return base_size_; }
  int channels() const { return channels_; }
  const std::vector<std::string>& classes() const { return classes_; }
  const std::vector<CacheRecord>& records() const { return records_; }
  const uint8_t* pixels(const CacheRecord& r) const { return data_ + r.offset; }
  const std::string& source() const { return source_; }

 private:
  std::string path_, source_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  int base_size_ = 0, channels_ = 0;
  std::vector<std::string> classes_;
  std::vector<CacheRecord> records_;
};

class CacheSource : public ImageSource {
 public:
  CacheSource(std::shared_ptr<const MappedCache> cache, uint32_t split, ImageTransform t, int workers);
  int size() const override { return int(index_.size()); }
  uint32_t label(int i) const override { return rec(i).label; }
  std::string describe(int i) const override;
  uint32_t produce(int i, bool train, uint64_t rng_seed, uint8_t* out) const override;
  const ImageTransform& transform() const override { return t_; }
  int workers() const override { return workers_; }

 private:
  const CacheRecord& rec(int i) const { return cache_->records()[index_[size_t(i)]]; }
  std::shared_ptr<const MappedCache> cache_;
  std::vector<uint32_t> index_;  // records of this split
  ImageTransform t_;
  int workers_;
};

struct CacheWriteReport {
  int train = 0, val = 0, skipped = 0;
  uint64_t bytes = 0;
  double seconds = 0;
};

// Decodes the folder at `root` (val/ or options.val_split as for training) with
// options.workers threads and writes the cache of shorter side `base_size` to `out`.
// Channels follow options.in_channels (or the images). Unreadable files are skipped with
// a warning each (fatal with options.strict).
CacheWriteReport write_image_cache(const std::string& root, int base_size, const std::string& out,
                                   const DataOptions& options);

// Both splits of a cache file as streamed Datasets (name "cache"). options.image_size 0:
// the size whose base is the cache's (base itself; base * 0.875 for --augment imagenet).
std::pair<Dataset, Dataset> load_image_cache(const std::string& path, const DataOptions& options);

}  // namespace vkqat::nn

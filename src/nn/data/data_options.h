#pragma once
// The data flags of `vkqat train` beyond --data/--data-dir: image folders and caches
// (size, augmentation, workers, validation split, channels, normalization, strictness)
// and --augment for the built-in sets. Stored in the run's config so --resume and eval
// rebuild the same pipeline.
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace vkqat::nn {

struct DataOptions {
  int image_size = 0;        // folder/cache output side; 0 = 224 (folder) or the cache's size
  std::string augment;       // none | flip | crop | imagenet; "" = the dataset's default
  int workers = 0;           // decode/augment threads; 0 = every core
  double val_split = 0;      // folder without val/: this fraction of each class is held out
  int in_channels = 0;       // 0 = follow the images (1 if all are grayscale, else 3)
  std::vector<float> mean, std;  // per channel (or one value for all); empty = default
  bool strict = false;       // unreadable files are fatal instead of skipped

  bool any() const;  // anything set (for the config's JSON)
  int resolved_workers() const;
  nlohmann::json to_json() const;
  static DataOptions from_json(const nlohmann::json& j);  // null -> defaults
  // Throws Error naming the flag for a value out of range.
  void validate() const;
};

}  // namespace vkqat::nn

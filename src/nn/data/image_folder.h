#pragma once
// Image folders in torchvision's ImageFolder layout:
//   ROOT/train/<class>/...   ROOT/val/<class>/...   (files at any depth below a class)
// Classes are the train/ subfolders sorted by name; label = position in that order. With
// no val/, DataOptions::val_split holds out a fixed (seed-independent) fraction of every
// class. Files are recognised by content (JPEG, PNG), not by extension.
//
// Bad input: an empty, non-image, corrupt-header or too-large file is skipped at scan
// time with one warning line naming it, and the count is printed at the end; a file whose
// pixels fail to decode later (a truncated body) is warned about once and replaced by the
// next readable image. DataOptions::strict turns both into errors. Fewer than two classes,
// val/ classes that train/ lacks, and an empty train/ are errors; a class with no images
// (or absent from val/) is a warning.
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "nn/data/data_options.h"
#include "nn/data/dataset.h"
#include "nn/data/image_decode.h"
#include "nn/data/image_source.h"

namespace vkqat::nn {

struct FolderEntry {
  std::string path;
  uint32_t label = 0;
  ImageInfo info;
};

struct FolderScan {
  std::string root;
  std::vector<std::string> classes;
  std::vector<FolderEntry> train, val;
  std::vector<std::pair<std::string, std::string>> bad;  // file, reason (skipped)
  bool has_val_dir = false;
  std::vector<std::string> warnings;  // printed by scan_image_folder when `print`
};

// Scans ROOT (headers only). Throws Error for the fatal cases above (and, when strict, for
// the first bad file). print: write the warnings to stderr as they occur.
FolderScan scan_image_folder(const std::string& root, double val_split, bool strict, bool print = true);

// Output channels for a scan: forced (1 or 3), else 1 when every image is grayscale.
int folder_channels(const FolderScan& scan, int forced);

// Warnings for files that fail while training (one line per file, thread-safe).
class BadFileLog {
 public:
  // Returns true the first time `path` is reported (and prints the warning then).
  bool report(const std::string& path, const std::string& reason);
  size_t count() const;

 private:
  mutable std::mutex mu_;
  std::set<std::string> seen_;
};

class FolderSource : public ImageSource {
 public:
  FolderSource(std::vector<FolderEntry> entries, ImageTransform t, int workers, bool strict);
  int size() const override { return int(entries_.size()); }
  uint32_t label(int i) const override { return entries_[size_t(i)].label; }
  std::string describe(int i) const override { return entries_[size_t(i)].path; }
  uint32_t produce(int i, bool train, uint64_t rng_seed, uint8_t* out) const override;
  const ImageTransform& transform() const override { return t_; }
  int workers() const override { return workers_; }
  // The base image of entry i (decoded, shorter side resized): what a cache stores.
  // Throws Error naming the file when it cannot be decoded.
  Image base_image(int i) const;
  // The same into per-call buffers (file bytes, decoded and resized images, memory reused);
  // returns `decoded` or `resized`.
  const Image& base_image(int i, std::vector<uint8_t>& bytes, Image& decoded, Image& resized) const;
  const BadFileLog& bad_files() const { return bad_; }

 private:
  std::vector<FolderEntry> entries_;
  ImageTransform t_;
  int workers_;
  bool strict_;
  mutable BadFileLog bad_;
};

// Whole file contents (throws Error naming the file).
std::vector<uint8_t> read_whole_file(const std::string& path);
void read_whole_file(const std::string& path, std::vector<uint8_t>& out);  // into out, its memory reused

// ImageNet's per-channel normalization (RGB), and its channel average for grayscale.
void imagenet_normalization(int channels, std::array<float, 3>& mean, std::array<float, 3>& std);
// Applies --mean/--std over the defaults already in d.
void apply_normalization_options(Dataset& d, const DataOptions& o);

// Both splits of an image folder as streamed Datasets (name "folder").
std::pair<Dataset, Dataset> load_image_folder(const std::string& root, const DataOptions& o);

}  // namespace vkqat::nn

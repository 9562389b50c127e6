#pragma once
// Image classification datasets held in memory as raw bytes (no Vulkan here).
//
// Supported formats:
//  - IDX (MNIST, Fashion-MNIST): {train,t10k}-{images-idx3,labels-idx1}-ubyte, each either
//    gzip-compressed (".gz") or raw; `.idx3-ubyte` spellings are accepted too.
//  - CIFAR-10 binary version: data_batch_1..5.bin / test_batch.bin, records of
//    1 label byte + 3072 pixel bytes (CHW, 32x32x3), in DIR or DIR/cifar-10-batches-bin.
//  - CIFAR-100 binary version: train.bin / test.bin, records of 1 coarse label byte + 1 fine
//    label byte + 3072 pixel bytes, in DIR or DIR/cifar-100-binary ("cifar100" uses the 100
//    fine labels, "cifar100-coarse" the 20 superclasses; class names from
//    {fine,coarse}_label_names.txt when present).
//  - Image folders ("folder", image_folder.h) and decoded-image caches ("cache",
//    image_cache.h): streamed through an ImageSource, never loaded whole.
// Every failure throws vkqat::Error naming the file (or directory) and the problem.
#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "nn/data/data_options.h"

namespace vkqat::nn {

class ImageSource;

struct Dataset {
  int n = 0, channels = 0, height = 0, width = 0, classes = 0;
  std::vector<uint8_t> images;  // n * channels * height * width, CHW per image
  std::vector<uint8_t> labels;  // n, each < classes
  std::string name;             // "fashion-mnist" | "mnist" | "cifar10" | ... (or a test name)
  std::vector<std::string> class_names;  // empty when the format has none
  // Streamed datasets (folder, cache): images and labels are empty and every image comes
  // from source (its first n entries), already transformed to channels x height x width.
  std::shared_ptr<const ImageSource> source;
  // Streamed subsets (first_n): image i is source entry source_index[i]; empty = entry i.
  std::vector<uint32_t> source_index;
  uint32_t source_entry(int i) const { return source_index.empty() ? uint32_t(i) : source_index[size_t(i)]; }
  // Per-channel normalization applied after scaling to [0,1]: (x - mean) / std.
  // Single-channel datasets repeat their constant in all three entries.
  std::array<float, 3> mean{0.f, 0.f, 0.f}, std{1.f, 1.f, 1.f};

  size_t image_size() const { return size_t(channels) * height * width; }
  const uint8_t* image(int i) const { return images.data() + size_t(i) * image_size(); }
  uint32_t label(int i) const;  // either kind
};

// name: "fashion-mnist" | "mnist" | "cifar10". dir "" = default_data_dir(name).
// train selects the training split (60000 / 50000 images) or the test split (10000).
Dataset load_dataset(const std::string& name, const std::string& dir, bool train);

// Train and test splits of any dataset: the built-in ones (options: none apply but
// --mean/--std), "folder" (dir = the image folder) or "cache" (dir = the cache file).
std::pair<Dataset, Dataset> load_dataset_splits(const std::string& name, const std::string& dir,
                                                const DataOptions& options);
// Only the test split (for eval / infer); the same images as load_dataset_splits().second.
Dataset load_test_split(const std::string& name, const std::string& dir, const DataOptions& options);

// A streamed dataset's eval images decoded into memory (images/labels filled, source
// dropped); an in-memory dataset is returned as is. For code that needs raw pixels
// (integer inference); needs classes <= 256.
Dataset materialize(const Dataset& d);

// Default directories: fashion-mnist -> /usr/share/datasets/fashion-mnist (Debian package
// dataset-fashion-mnist), mnist -> /usr/share/datasets/mnist, cifar10 ->
// /usr/share/datasets/cifar10. Throws for an unknown name.
std::string default_data_dir(const std::string& name);

// Normalization constants of DESIGN.md for a known dataset name (throws otherwise).
void dataset_normalization(const std::string& name, std::array<float, 3>& mean,
                           std::array<float, 3>& std);

// Lower-level readers (used by load_dataset; exposed for tests and tools).
// IDX image + label file pair; classes = 10. Files may be gzip or raw.
Dataset load_idx(const std::string& images_path, const std::string& labels_path);
// CIFAR-10 binary batch files, concatenated in the given order.
Dataset load_cifar10_files(const std::vector<std::string>& paths);
// A CIFAR-100 binary file (train.bin or test.bin); fine: 100 fine labels, else 20 coarse.
Dataset load_cifar100_file(const std::string& path, bool fine);

// The first k images of d (k clamped to d.n), for quick runs and tests. A streamed set
// (sorted by class) takes k evenly spaced images instead, so every class stays represented.
Dataset first_n(const Dataset& d, int k);

}  // namespace vkqat::nn

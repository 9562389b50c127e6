#pragma once
// Image classification datasets held in memory as raw bytes (no Vulkan here).
//
// Supported formats:
//  - IDX (MNIST, Fashion-MNIST): {train,t10k}-{images-idx3,labels-idx1}-ubyte, each either
//    gzip-compressed (".gz") or raw; `.idx3-ubyte` spellings are accepted too.
//  - CIFAR-10 binary version: data_batch_1..5.bin / test_batch.bin, records of
//    1 label byte + 3072 pixel bytes (CHW, 32x32x3), in DIR or DIR/cifar-10-batches-bin.
// Every failure throws vkqat::Error naming the file (or directory) and the problem.
#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace vkqat::nn {

struct Dataset {
  int n = 0, channels = 0, height = 0, width = 0, classes = 0;
  std::vector<uint8_t> images;  // n * channels * height * width, CHW per image
  std::vector<uint8_t> labels;  // n, each < classes
  std::string name;             // "fashion-mnist" | "mnist" | "cifar10" (or a test name)
  // Per-channel normalization applied after scaling to [0,1]: (x - mean) / std.
  // Single-channel datasets repeat their constant in all three entries.
  std::array<float, 3> mean{0.f, 0.f, 0.f}, std{1.f, 1.f, 1.f};

  size_t image_size() const { return size_t(channels) * height * width; }
  const uint8_t* image(int i) const { return images.data() + size_t(i) * image_size(); }
};

// name: "fashion-mnist" | "mnist" | "cifar10". dir "" = default_data_dir(name).
// train selects the training split (60000 / 50000 images) or the test split (10000).
Dataset load_dataset(const std::string& name, const std::string& dir, bool train);

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

// The first k images of d (k clamped to d.n), for quick runs and tests.
Dataset first_n(const Dataset& d, int k);

}  // namespace vkqat::nn

#pragma once
// Float batches from a Dataset: scaled to [0,1], normalized per channel, NCHW.
//
// Training mode: every epoch visits a fresh permutation; the last partial batch is
// dropped (so every training step has the same batch size, which the recorded command
// buffer relies on, and BatchNorm never sees a tiny batch). Augmentation: random crop
// after zero padding (pad 2 for 28x28 inputs, 4 for 32x32; the padding is 0 in raw pixel
// space, i.e. it becomes (0 - mean) / std after normalization) followed by a horizontal
// flip with p = 0.5. Flip defaults to on for cifar10 and fashion-mnist and off for mnist
// (and any other name): digits are not mirror-symmetric, clothes and CIFAR objects are.
//
// Eval mode: images in dataset order, no augmentation, the last partial batch included
// (Batch::size says how many images it holds).
//
// Determinism: all randomness comes from std::mt19937_64 seeded with values derived
// from (seed, epoch, stream) by splitmix64; integers in [0, n) are taken as r % n (not
// std::uniform_int_distribution, whose algorithm differs between standard libraries).
// The epoch permutation uses stream 0 (Fisher-Yates, i = n-1 .. 1, j = r % (i+1));
// batch b of an epoch uses its own generator (stream b + 1) and, per image in batch
// order, draws crop dy, crop dx, flip bit (three draws even when flip is off). A batch
// therefore depends only on (seed, epoch, batch index): the prefetch thread produces
// exactly what a synchronous run produces, and a trainer resumes exactly with
// start_epoch(epoch, position).
//
// Streamed datasets (Dataset::source: image folders, caches): the source decodes and
// augments (image_transform.h) and the loader only normalizes. A pool of
// source->workers() threads fills up to kStreamDepth batches ahead, image by image (a
// bounded queue: memory is a few batches, not the dataset). Image idx of epoch e is
// augmented with a generator seeded from (seed, e, 2^32 + idx), so the worker count and
// the scheduling never change a batch. The epoch order is the same Fisher-Yates shuffle.
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <mutex>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "nn/data/dataset.h"

namespace vkqat::nn {

struct Batch {
  std::vector<float> x;         // size * C * H * W floats, NCHW (exactly `size` images)
  std::vector<uint32_t> y;      // size labels
  std::vector<uint32_t> index;  // size dataset indices the images came from
  int size = 0;                 // images in this batch (< batch size only for eval's last)
};

// Batches a streamed dataset's workers prepare ahead of the consumer.
constexpr int kStreamDepth = 3;

struct LoaderOptions {
  int limit = 0;               // use only the first K images of the dataset (0 = all)
  bool prefetch = true;        // prepare the next batch on a background thread
  bool shuffle = true;         // training mode only
  bool augment = true;         // training mode only: crop (+ flip if enabled)
  std::optional<int> pad;      // crop padding; default 4 if height >= 32, else 2
  std::optional<bool> flip;    // default: on for cifar10 / cifar100 / fashion-mnist, off otherwise
  int workers = 0;             // streamed datasets: decode threads (0 = the source's choice)
};

// --augment for the built-in in-memory sets: "" keeps the defaults above, "none" turns
// augmentation off, "flip" is flip only (pad 0), "crop" crop + flip. Throws for "imagenet".
LoaderOptions loader_options_for_augment(const std::string& augment);

class BatchLoader {
 public:
  // The dataset is referenced, not copied: it must outlive the loader.
  BatchLoader(const Dataset& data, int batch, bool train, uint64_t seed, LoaderOptions opt = {});
  BatchLoader(Dataset&&, int, bool, uint64_t, LoaderOptions = {}) = delete;  // would dangle
  ~BatchLoader();
  BatchLoader(const BatchLoader&) = delete;
  BatchLoader& operator=(const BatchLoader&) = delete;

  // Begin epoch `epoch` (>= 0), skipping the first `position` batches (for resuming).
  // Must be called before next().
  void start_epoch(int epoch, int position = 0);
  // Fills `out` with the next batch of the current epoch (its buffers are reused);
  // returns false, with out.size = 0, once the epoch is exhausted.
  bool next(Batch& out);

  int batches_per_epoch() const { return batches_; }
  int batch_size() const { return batch_; }
  int size() const { return n_; }  // images used (after LoaderOptions::limit)
  bool train() const { return train_; }
  int pad() const { return pad_; }
  bool flip() const { return flip_; }
  bool augment() const { return augment_; }

  // RNG state for checkpoints: resume with start_epoch(epoch(), position()).
  uint64_t seed() const { return seed_; }
  int epoch() const { return epoch_; }
  int position() const { return pos_; }  // batches already returned in this epoch

  // Build batch `b` of the current epoch synchronously (what next() returns for it).
  void make_batch(int b, Batch& out) const;

  struct Stream;  // the worker pool of a streamed dataset

 private:
  void produce_image(int b, int i, Batch& out) const;  // streamed: image i of batch b into out
  void cancel_prefetch();  // waits for an in-flight job and discards it
  void schedule(int b);
  void worker_loop();
  void stream_loop();
  void stream_fill();
  void stream_quiesce(std::unique_lock<std::mutex>& lk);

  const Dataset& data_;
  int batch_, n_, batches_;
  bool train_;
  uint64_t seed_;
  bool prefetch_, shuffle_, augment_, flip_;
  int pad_;
  std::vector<float> lut_;  // [channel][256] normalized value of each raw byte
  std::vector<uint32_t> order_;
  int epoch_ = -1, pos_ = 0;

  // prefetch state, guarded by mu_
  std::thread worker_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  int job_ = -1;        // batch index requested from the worker, -1 = none
  bool job_done_ = false;
  Batch buf_;
  std::exception_ptr error_;

  std::unique_ptr<Stream> stream_;
};

}  // namespace vkqat::nn

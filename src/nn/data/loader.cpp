// Batching, augmentation and the prefetch thread. See loader.h for the determinism rules.
#include "nn/data/loader.h"

#include <algorithm>
#include <numeric>
#include <random>

#include "backend/error.h"
#include "nn/data/image_source.h"

namespace vkqat::nn {
namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Seed of the generator for (seed, epoch, stream); stream 0 = permutation, b+1 = batch b.
uint64_t derive_seed(uint64_t seed, int epoch, uint64_t stream) {
  uint64_t h = splitmix64(seed);
  h = splitmix64(h ^ uint64_t(uint32_t(epoch)));
  return splitmix64(h ^ stream);
}

// Uniform integer in [0, n): plain modulo, identical on every standard library. The bias
// (n / 2^64) is far below anything measurable.
inline uint32_t draw(std::mt19937_64& rng, uint32_t n) { return uint32_t(rng() % n); }

std::string where(const Dataset& d) { return "BatchLoader(" + (d.name.empty() ? "dataset" : d.name) + ")"; }

// Generator seed of streamed image idx in an epoch: its own stream space above the batches'.
uint64_t image_seed(uint64_t seed, int epoch, uint32_t idx) { return derive_seed(seed, epoch, (uint64_t(1) << 32) + idx); }

}  // namespace

LoaderOptions loader_options_for_augment(const std::string& augment) {
  LoaderOptions o;
  if (augment.empty() || augment == "crop") return o;
  if (augment == "none") {
    o.augment = false;
  } else if (augment == "flip") {
    o.pad = 0;
    o.flip = true;
  } else {
    throw Error("--augment " + augment + ": the built-in datasets take none, flip or crop (imagenet is for --data folder/cache)");
  }
  return o;
}

// A slot holds one batch being filled image by image; workers claim the lowest batch first.
struct BatchLoader::Stream {
  struct Slot {
    int b = -1;  // batch index, -1 = free
    int size = 0, claimed = 0, done = 0, inflight = 0;
    Batch batch;
    std::exception_ptr error;
  };
  std::vector<Slot> slots;
  std::vector<std::thread> threads;
  std::mutex mu;
  std::condition_variable work_cv, done_cv;
  bool stop = false;
  int next_batch = 0;  // the next batch index to give a free slot
};

BatchLoader::BatchLoader(const Dataset& data, int batch, bool train, uint64_t seed, LoaderOptions opt)
    : data_(data), batch_(batch), train_(train), seed_(seed) {
  if (batch <= 0) throw Error(where(data) + ": batch size must be positive, got " + std::to_string(batch));
  if (data.channels < 1 || data.channels > 3 || data.height < 1 || data.width < 1)
    throw Error(where(data) + ": unsupported image shape " + std::to_string(data.channels) + "x" +
                std::to_string(data.height) + "x" + std::to_string(data.width));
  if (data.source) {
    const ImageTransform& t = data.source->transform();
    if ((data.source_index.empty() ? data.n > data.source->size() : data.source_index.size() != size_t(data.n)) ||
        t.channels != data.channels || t.size != data.height || t.size != data.width)
      throw Error(where(data) + ": dataset and image source disagree on count or shape");
  } else if (data.images.size() != size_t(data.n) * data.image_size() || data.labels.size() != size_t(data.n))
    throw Error(where(data) + ": inconsistent dataset (" + std::to_string(data.n) + " images but " +
                std::to_string(data.images.size()) + " pixel bytes and " + std::to_string(data.labels.size()) +
                " labels)");
  if (opt.limit < 0) throw Error(where(data) + ": negative image limit");
  n_ = opt.limit > 0 ? std::min(opt.limit, data.n) : data.n;
  if (n_ == 0) throw Error(where(data) + ": dataset is empty");
  if (train && n_ < batch)
    throw Error(where(data) + ": " + std::to_string(n_) + " training images are fewer than one batch of " +
                std::to_string(batch));
  batches_ = train ? n_ / batch : (n_ + batch - 1) / batch;

  prefetch_ = opt.prefetch;
  shuffle_ = train && opt.shuffle;
  augment_ = train && opt.augment;
  pad_ = opt.pad.value_or(data.height >= 32 ? 4 : 2);
  if (pad_ < 0) throw Error(where(data) + ": negative crop padding");
  flip_ = opt.flip.value_or(data.name == "cifar10" || data.name == "cifar100" || data.name == "cifar100-coarse" ||
                            data.name == "fashion-mnist");

  lut_.resize(size_t(data.channels) * 256);
  for (int c = 0; c < data.channels; ++c)
    for (int v = 0; v < 256; ++v)
      lut_[size_t(c) * 256 + v] = (float(v) / 255.0f - data.mean[c]) / data.std[c];

  order_.resize(size_t(n_));
  std::iota(order_.begin(), order_.end(), 0u);
  if (prefetch_ && data.source) {
    stream_ = std::make_unique<Stream>();
    stream_->slots.resize(size_t(std::min(kStreamDepth, batches_)));
    const int workers = opt.workers > 0 ? opt.workers : data.source->workers();
    for (int w = 0; w < workers; ++w) stream_->threads.emplace_back([this] { stream_loop(); });
  } else if (prefetch_) {
    worker_ = std::thread([this] { worker_loop(); });
  }
}

// ---- streamed datasets: the worker pool -------------------------------------------
void BatchLoader::stream_loop() {
  Stream& st = *stream_;
  std::unique_lock<std::mutex> lk(st.mu);
  for (;;) {
    Stream::Slot* slot = nullptr;
    st.work_cv.wait(lk, [&] {
      if (st.stop) return true;
      slot = nullptr;  // re-chosen on every wake-up
      for (Stream::Slot& s : st.slots)
        if (s.b >= 0 && s.claimed < s.size && (!slot || s.b < slot->b)) slot = &s;
      return slot != nullptr;
    });
    if (st.stop) return;
    const int b = slot->b, i = slot->claimed++;
    ++slot->inflight;
    lk.unlock();
    std::exception_ptr err;
    try {
      produce_image(b, i, slot->batch);  // distinct images write distinct elements
    } catch (...) {
      err = std::current_exception();
    }
    lk.lock();
    if (err && !slot->error) slot->error = err;
    --slot->inflight;
    if (++slot->done == slot->size || slot->inflight == 0) st.done_cv.notify_all();
  }
}

// Gives free slots the next batches of the epoch (caller holds the lock).
void BatchLoader::stream_fill() {
  Stream& st = *stream_;
  bool any = false;
  for (Stream::Slot& s : st.slots) {
    if (s.b >= 0 || st.next_batch >= batches_) continue;
    s.b = st.next_batch++;
    s.size = std::min(batch_, n_ - s.b * batch_);
    s.claimed = s.done = 0;
    s.error = nullptr;
    s.batch.size = s.size;
    s.batch.x.resize(size_t(s.size) * data_.image_size());
    s.batch.y.resize(size_t(s.size));
    s.batch.index.resize(size_t(s.size));
    any = true;
  }
  if (any) st.work_cv.notify_all();
}

// Stops handing out images and waits for those in flight (caller holds the lock).
void BatchLoader::stream_quiesce(std::unique_lock<std::mutex>& lk) {
  Stream& st = *stream_;
  for (Stream::Slot& s : st.slots) s.claimed = s.size;
  st.done_cv.wait(lk, [&] {
    for (const Stream::Slot& s : st.slots)
      if (s.inflight > 0) return false;
    return true;
  });
  for (Stream::Slot& s : st.slots) s.b = -1;
}

void BatchLoader::produce_image(int b, int i, Batch& out) const {
  const size_t chw = data_.image_size();
  const uint32_t idx = order_[size_t(b) * batch_ + size_t(i)];
  thread_local std::vector<uint8_t> pixels;
  pixels.resize(chw);
  // Seeded by the dataset index (what Batch::index reports), read from the source's entry.
  const uint32_t label =
      data_.source->produce(int(data_.source_entry(int(idx))), augment_, image_seed(seed_, epoch_, idx), pixels.data());
  out.index[size_t(i)] = idx;
  out.y[size_t(i)] = label;
  const size_t hw = size_t(data_.height) * data_.width;
  float* dst = out.x.data() + size_t(i) * chw;
  for (int c = 0; c < data_.channels; ++c) {
    const float* lut = lut_.data() + size_t(c) * 256;
    for (size_t k = 0; k < hw; ++k) dst[c * hw + k] = lut[pixels[c * hw + k]];
  }
}

BatchLoader::~BatchLoader() {
  if (stream_) {
    {
      std::lock_guard<std::mutex> lk(stream_->mu);
      stream_->stop = true;
    }
    stream_->work_cv.notify_all();
    for (std::thread& t : stream_->threads) t.join();
  }
  if (worker_.joinable()) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    worker_.join();
  }
}

void BatchLoader::cancel_prefetch() {
  if (!prefetch_) return;
  std::unique_lock<std::mutex> lk(mu_);
  cv_.wait(lk, [&] { return job_ < 0 || job_done_; });
  job_ = -1;
  error_ = nullptr;
}

void BatchLoader::schedule(int b) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    job_ = b;
    job_done_ = false;
  }
  cv_.notify_all();
}

void BatchLoader::worker_loop() {
  std::unique_lock<std::mutex> lk(mu_);
  for (;;) {
    cv_.wait(lk, [&] { return stop_ || (job_ >= 0 && !job_done_); });
    if (stop_) return;
    int b = job_;
    lk.unlock();
    std::exception_ptr err;
    try {
      make_batch(b, buf_);  // buf_ is only touched by the consumer once job_done_ is set
    } catch (...) {
      err = std::current_exception();
    }
    lk.lock();
    error_ = err;
    job_done_ = true;
    cv_.notify_all();
  }
}

void BatchLoader::start_epoch(int epoch, int position) {
  if (epoch < 0) throw Error(where(data_) + ": negative epoch " + std::to_string(epoch));
  if (position < 0 || position > batches_)
    throw Error(where(data_) + ": position " + std::to_string(position) + " outside [0, " +
                std::to_string(batches_) + "]");
  std::unique_lock<std::mutex> slk;
  if (stream_) {
    slk = std::unique_lock<std::mutex>(stream_->mu);
    stream_quiesce(slk);  // the workers read order_ and epoch_
  }
  cancel_prefetch();  // the worker reads order_ and epoch_
  epoch_ = epoch;
  pos_ = position;
  std::iota(order_.begin(), order_.end(), 0u);
  if (shuffle_) {
    std::mt19937_64 rng(derive_seed(seed_, epoch, 0));
    for (uint32_t i = uint32_t(n_) - 1; i > 0; --i) std::swap(order_[i], order_[draw(rng, i + 1)]);
  }
  if (stream_) {
    stream_->next_batch = pos_;
    stream_fill();
    return;
  }
  if (prefetch_ && pos_ < batches_) schedule(pos_);
}

bool BatchLoader::next(Batch& out) {
  if (epoch_ < 0) throw Error(where(data_) + ": next() called before start_epoch()");
  if (pos_ >= batches_) {
    out.size = 0;
    out.x.clear();
    out.y.clear();
    out.index.clear();
    return false;
  }
  if (stream_) {
    Stream& st = *stream_;
    std::unique_lock<std::mutex> lk(st.mu);
    Stream::Slot* slot = nullptr;
    for (Stream::Slot& s : st.slots)
      if (s.b == pos_) slot = &s;
    if (!slot) throw Error(where(data_) + ": internal error: batch " + std::to_string(pos_) + " was not scheduled");
    st.done_cv.wait(lk, [&] { return slot->done == slot->size; });
    slot->b = -1;
    if (slot->error) {
      std::exception_ptr e = slot->error;
      slot->error = nullptr;
      std::rethrow_exception(e);
    }
    std::swap(out, slot->batch);  // the slot refills the consumer's old buffers
    ++pos_;
    stream_fill();
    return true;
  }
  bool got = false;
  if (prefetch_) {
    std::unique_lock<std::mutex> lk(mu_);
    if (job_ == pos_) {
      cv_.wait(lk, [&] { return job_done_; });
      job_ = -1;
      if (error_) {
        std::exception_ptr e = error_;
        error_ = nullptr;
        std::rethrow_exception(e);
      }
      std::swap(out, buf_);  // double buffering: the worker refills the consumer's old one
      got = true;
    }
  }
  if (!got) {
    cancel_prefetch();
    make_batch(pos_, out);
  }
  ++pos_;
  if (prefetch_ && pos_ < batches_) schedule(pos_);
  return true;
}

void BatchLoader::make_batch(int b, Batch& out) const {
  if (b < 0 || b >= batches_ || epoch_ < 0)
    throw Error(where(data_) + ": batch " + std::to_string(b) + " does not exist (epoch " +
                std::to_string(epoch_) + ", " + std::to_string(batches_) + " batches)");
  const int C = data_.channels, H = data_.height, W = data_.width;
  const size_t chw = data_.image_size(), hw = size_t(H) * W;
  const int start = b * batch_;
  const int size = std::min(batch_, n_ - start);
  out.size = size;
  out.x.resize(size_t(size) * chw);
  out.y.resize(size_t(size));
  out.index.resize(size_t(size));

  if (data_.source) {
    for (int i = 0; i < size; ++i) produce_image(b, i, out);
    return;
  }
  std::mt19937_64 rng(derive_seed(seed_, epoch_, uint64_t(b) + 1));
  const uint32_t span = uint32_t(2 * pad_ + 1);
  for (int i = 0; i < size; ++i) {
    const uint32_t idx = order_[size_t(start + i)];
    out.index[size_t(i)] = idx;
    out.y[size_t(i)] = data_.labels[idx];
    const uint8_t* src = data_.image(int(idx));
    float* dst = out.x.data() + size_t(i) * chw;
    if (!augment_) {
      for (int c = 0; c < C; ++c) {
        const float* lut = lut_.data() + size_t(c) * 256;
        for (size_t k = 0; k < hw; ++k) dst[c * hw + k] = lut[src[c * hw + k]];
      }
      continue;
    }
    // Crop offsets into the zero-padded (H+2p)x(W+2p) image, then the flip bit.
    const int dy = int(draw(rng, span)), dx = int(draw(rng, span));
    const bool f = draw(rng, 2) == 1 && flip_;
    for (int c = 0; c < C; ++c) {
      const float* lut = lut_.data() + size_t(c) * 256;
      const float zero = lut[0];
      const uint8_t* sc = src + c * hw;
      float* dc = dst + c * hw;
      for (int y = 0; y < H; ++y) {
        const int sy = y + dy - pad_;
        float* row = dc + size_t(y) * W;
        if (sy < 0 || sy >= H) {
          std::fill(row, row + W, zero);
          continue;
        }
        const uint8_t* srow = sc + size_t(sy) * W;
        for (int x = 0; x < W; ++x) {
          const int sx = (f ? W - 1 - x : x) + dx - pad_;  // crop, then mirror the crop
          row[x] = (sx < 0 || sx >= W) ? zero : lut[srow[sx]];
        }
      }
    }
  }
}

}  // namespace vkqat::nn

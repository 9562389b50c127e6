#pragma once
// What the trainer's source files share (not a public interface): the evaluator, the
// trainer's state (Trainer::Impl) and small helpers. trainer.cpp holds construction,
// recording and the training loop; trainer_eval.cpp the test-set evaluation;
// trainer_resume.cpp the run-state files (save, resume).
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include "backend/recording.h"
#include "nn/data/loader.h"
#include "nn/train/distributed.h"
#include "nn/train/gradient_buckets.h"
#include "nn/train/trainer.h"

namespace vkqat::nn {
namespace trainer_detail {
using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// "nan" / "inf" / "1e+06" for messages.
inline std::string num(double v) {
  if (std::isnan(v)) return "nan";  // not "-nan"
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

inline std::string absolute_path(const std::string& p) {
  namespace fs = std::filesystem;
  if (p.empty()) return p;
  std::error_code ec;
  fs::path a = fs::absolute(p, ec).lexically_normal();
  if (!a.has_filename() && a.has_parent_path() && a != a.root_path()) a = a.parent_path();  // "dir/" -> "dir"
  return ec ? p : a.string();
}
}  // namespace trainer_detail

// Copies a batch into the host staging tensors (padding a partial batch with ignored rows).
void fill_host_batch(Tensor& host_x, Tensor& host_y, const Batch& b);
// Rows [rank * n / world, (rank + 1) * n / world) of a full global batch of n images.
void take_shard(const Batch& global, int rank, int world, Batch& out);

// Test-set evaluation of a network: its own recording (eval-mode forward + loss), replayed
// per batch; a partial last batch is padded with ignored rows.
class Evaluator {
 public:
  Evaluator(Context& ctx, Network& net, const Dataset& data, uint64_t seed, AuxiliaryHead* aux = nullptr);
  EvalResult run();

 private:
  Tensor host_x_, host_y_, labels_, loss_sum_, correct_, aux_loss_sum_, aux_correct_, host_logits_;
  BatchLoader loader_;
  Recording rec_;
  bool has_aux_;
};

struct Trainer::Impl {
  Context& ctx;
  Dataset train_set, test_set;
  std::unique_ptr<BatchLoader> train_loader;
  // What the host writes before a step (batch, labels, lr) and reads after it, with the
  // recorded step that uses them: two slots under StepPipeline::Overlap (the host fills
  // one while the device runs the other's step), slot 0 alone otherwise.
  struct StepSlot {
    Tensor host_x, host_y, step_params;
    Tensor totals;  // U32 [4]: loss_sum, correct, aux_loss_sum, aux_correct after the step (overlap)
    std::unique_ptr<Recording> step;
  };
  std::array<StepSlot, 2> slots;
  StepPipeline pipeline = StepPipeline::Overlap;
  bool overlap_recorded = false;  // both slots recorded with the totals copies (see record_step)
  Tensor labels;
  Tensor loss_sum, correct;                    // train accumulators (reset each epoch)
  Tensor aux_loss_sum, aux_correct;            // the same for the auxiliary head
  int64_t loop_steps = 0;                      // Trainer::PipelineStats of this process
  double loop_seconds = 0, host_wait_seconds = 0;
  std::unique_ptr<Evaluator> evaluator;
  int epoch = 0, position = 0;
  int64_t step = 0;
  // Train metrics at the last metrics.jsonl step record of this epoch: the next record
  // reports the mean over the steps since (kept in the checkpoint for exact resumes).
  float log_loss_base = 0.f;
  uint32_t log_correct_base = 0;
  int log_position_base = 0;
  double train_seconds = 0;
  int64_t train_images = 0;
  // Data-parallel (under mpirun, see distributed.h): the network holds this rank's shard
  // of the global batch; the step is two recordings, forward+backward ending with the
  // gradients copied into grad_flat (host-visible, one all-reduce), and the optimizer
  // (gradients copied back, SGD).
  int world = 1, rank = 0, local_batch = 0;
  bool data_parallel = false;  // MPI active (also for one rank: the split path)
  Tensor grad_flat;
  int64_t grad_floats = 0;    // used floats of grad_flat (alignment gaps stay zero)
  GradientLayout grad_layout;  // where each gradient lies in grad_flat; the buckets
  std::unique_ptr<dist::GradientBuckets> bucket_sums;  // --bucket-mb > 0 (null: one blocking all-reduce)
  std::unique_ptr<Recording> update_step;
  Batch shard;
  // allreduce_seconds: the host blocked in the all-reduce after the backward (with buckets,
  // waiting for those not yet done: the part that did not overlap the backward).
  double wait_seconds = 0, allreduce_seconds = 0, update_seconds = 0;
  int64_t data_parallel_steps = 0;
  // --sync-bn on several ranks: every BN layer's exchange (BatchNorm2dLayer::sync).
  std::unique_ptr<dist::BatchNormExchange> bn_exchange;
  explicit Impl(Context& c) : ctx(c) {}
};

// Writes checkpoint + trainer state (momentum, running metrics, data position) to `dir`.
void save_run_state(const std::string& dir, const TrainConfig& cfg, Network& net, AuxiliaryHead* aux, Trainer::Impl& s);

}  // namespace vkqat::nn

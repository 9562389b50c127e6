#pragma once
// The training loop. One training step (upload batch, forward, loss, backward, SGD) is
// recorded once into a command buffer and replayed every step; the host only writes the
// next batch and the scheduled learning rate before each replay.
#include <nlohmann/json.hpp>

#include <atomic>
#include <functional>
#include <memory>
#include <string>

#include "nn/data/dataset.h"
#include "nn/model/network.h"

namespace vkqat::nn {

struct TrainConfig {
  std::string data = "fashion-mnist", data_dir;
  ModelConfig model;
  int epochs = 1, batch = 128;
  float lr = 0.1f, momentum = 0.9f, weight_decay = 5e-4f;
  bool nesterov = true;
  float warmup_epochs = 0.f;  // linear warm-up, then cosine to 0
  uint64_t seed = 0;
  int wbits = 32, abits = 32;
  std::string out;               // run directory
  std::string init;              // checkpoint to initialise weights from
  int train_limit = 0, test_limit = 0;  // use only the first K images (quick runs, tests)
  int log_every = 50;            // steps between metrics.jsonl step records
  int stop_after_steps = 0;      // stop (as if interrupted) after this many steps of this process
  bool profile = false;          // print per-dispatch GPU times of one step
  nlohmann::json to_json() const;
  static TrainConfig from_json(const nlohmann::json& j);
};

struct EvalResult {
  double loss = 0, acc = 0;
  int images = 0;
};

struct TrainSummary {
  double test_acc = 0, test_loss = 0, train_images_per_s = 0, seconds = 0;
  int epochs = 0;
  bool interrupted = false;
  nlohmann::json json;  // what summary.json holds
};

class Trainer {
 public:
  Trainer(Context& ctx, TrainConfig cfg);
  ~Trainer();
  // Continues the run in `run_dir` from its last checkpoint (weights, momentum, step, RNG).
  static std::unique_ptr<Trainer> resume(Context& ctx, const std::string& run_dir, int epochs_override);

  TrainSummary run();
  EvalResult evaluate();
  Network& network() { return *net_; }
  const TrainConfig& config() const { return cfg_; }
  // Called from a signal handler: finish the current step, checkpoint, stop.
  static void request_stop();

  struct Impl;  // loaders, host staging tensors, the recorded step, progress counters

 private:
  std::unique_ptr<Impl> impl_;
  TrainConfig cfg_;
  std::unique_ptr<Network> net_;
};

// Evaluates a checkpoint (vkqat or PyTorch state_dict in safetensors) on a test set.
struct EvalRequest {
  std::string checkpoint, data = "fashion-mnist", data_dir, model;  // model/width: for files without metadata
  int width = 0, batch = 256, limit = 0;
};
EvalResult evaluate_checkpoint(Context& ctx, const EvalRequest& req, ModelConfig* used = nullptr);

}  // namespace vkqat::nn

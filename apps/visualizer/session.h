#pragma once
// What the UI thread shows and how it steers training: a mutex-protected record of the small
// results (per-step scalars, statistics snapshots, GPU times) that the training thread's
// hooks append to, and a queue of commands the UI adds and the hooks apply between steps.
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "nn/train/trainer.h"
#include "quant/stats.h"
#include "quant/stats_file.h"

namespace vkqat::viz {

struct StepPoint {
  int64_t step;
  float loss, acc, aux_loss, aux_acc, lr, images_per_s;
};
struct EpochPoint {
  int epoch;
  int64_t step;
  float test_acc, aux_test_acc;  // aux: NaN without the aux head
};
// The GPU times of one training step, grouped by dispatch label (group_by_label: the same
// rows as `vkqat train --profile`).
struct GpuTimes {
  int64_t step = 0;          // the step they were measured at (0: none yet)
  size_t commands = 0;       // commands in the recorded step
  size_t timed = 0;          // commands with a time
  bool complete = false;     // every command timed, timestamps in order
  double total_ms = 0;
  std::vector<LabelTime> rows;  // largest first
  nlohmann::json to_json() const;
};

// The settings a user can change while training runs.
struct Settings {
  int wbits = 32, abits = 32;
  bool sat = false, aux = false;
  float aux_weight = 1, lr = 0.1f;
};

// A consistent copy of everything a frame draws (snapshots are shared, never copied).
struct View {
  std::vector<StepPoint> steps;
  std::vector<EpochPoint> epochs;
  std::vector<std::shared_ptr<const quant::StatsSnapshot>> stats;
  GpuTimes gpu;
  Settings settings;
  std::string title, status, error;
  bool live = false, paused = false, finished = false;
  int64_t step = 0, total_steps = 0;
};

class Session {
 public:
  // Live: trains `trainer` on a worker thread (start()); statistics every `stats_every` steps.
  Session(std::unique_ptr<nn::Trainer> trainer, int stats_every, std::string title);
  // Replay of a finished run: RUN_DIR/stats.cbor + metrics.jsonl. Throws Error.
  static std::unique_ptr<Session> replay(const std::string& run_dir);
  ~Session();

  void start();
  View view();
  int64_t steps_done();
  // Blocks until a step past `step` is done or training ended; returns the step count.
  int64_t wait_for_step_after(int64_t step);

  // Commands (applied by the training thread before its next step).
  void set_paused(bool paused);
  void single_step();
  void apply(const Settings& s);  // bits / SAT / aux / lambda: rebuild; lr: immediate
  void save_checkpoint();
  void quit();  // stop before the next step (checkpointed)
  void join();  // quit() and wait for the training thread
  std::string error();

 private:
  Session() = default;
  class Hooks;
  void run_worker();

  std::mutex m_;
  std::condition_variable cv_;
  View data_;
  std::unique_ptr<nn::Trainer> trainer_;
  std::unique_ptr<Hooks> hooks_;
  std::thread worker_;
  // commands
  bool quit_ = false, save_ = false;
  int steps_allowed_ = 0;  // while paused: single steps to take
  std::optional<Settings> pending_;
};

}  // namespace vkqat::viz

#pragma once
// How code outside the training loop watches and steers it (the visualizer, `vkqat train
// --stats-every`): TrainHooks are called by Trainer::run() on its own thread, between
// replays of the recorded step, so they may read any device tensor of the network, record
// and run their own command buffers, and call Trainer::reconfigure / save_checkpoint.
#include <cstdint>

namespace vkqat::nn {

class Trainer;
struct EvalResult;

// One training step as the host saw it. Loss and accuracy are this step's batch means
// (differences of the device accumulators), not running means.
struct StepReport {
  int64_t step = 0;  // steps done, this one included
  int epoch = 0;     // 1-based
  int position = 0;  // steps done in this epoch
  int64_t steps_per_epoch = 0;
  float lr = 0;
  double loss = 0, acc = 0;
  bool has_aux = false;
  double aux_loss = 0, aux_acc = 0;
  double step_seconds = 0, images_per_s = 0;  // this step's wall time (replay + host work)
};

struct EpochReport {
  int epoch = 0;  // 1-based
  int64_t step = 0;
  double train_loss = 0, train_acc = 0;
  const EvalResult* test = nullptr;  // LP head and, when present, the aux head
};

class TrainHooks {
 public:
  virtual ~TrainHooks() = default;
  // Before every step: may block (pause), apply controls; false stops the run as an
  // interrupt does (checkpoint, TrainSummary::interrupted).
  virtual bool before_step(Trainer&) { return true; }
  virtual void after_step(Trainer&, const StepReport&) {}
  virtual void after_epoch(Trainer&, const EpochReport&) {}
};

}  // namespace vkqat::nn

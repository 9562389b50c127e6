#pragma once
// The options of `vkqat train`, shared with `vkqat-viz` (which takes the same ones).
#include <CLI/CLI.hpp>

#include <set>
#include <string>

#include "nn/train/trainer.h"
#include "quant/policy.h"

namespace vkqat::cli {

struct TrainArgs {
  nn::TrainConfig cfg;
  quant::QuantConfig quant;
  std::string resume, bits_config;
  std::string model_file;  // --model-file (made absolute into cfg.model.model_file)
  std::string wquant, aquant;  // empty: the --quantizer preset's
  int device = -1;
  int stats_every = 0;  // write RUN_DIR/stats.cbor every N steps (0: no statistics)
  std::set<std::string> given;  // the flags given on the command line (--resume checks them)
};

// Adds every training option to `t`; call note_given(t, a) in its callback.
void add_train_options(CLI::App* t, TrainArgs& a);
void note_given(CLI::App* t, TrainArgs& a);
// Checks the arguments and folds the quantization flags into a.cfg.quant (throws Error).
void finish_train_args(TrainArgs& a);
// A new trainer, or the resumed one of --resume: flags that cannot change on resume are
// an error when given with another value than the run's; --epochs, --data-dir,
// --log-every, --keep-checkpoints (and --device) are applied.
std::unique_ptr<nn::Trainer> make_trainer(Context& ctx, const TrainArgs& a);

}  // namespace vkqat::cli

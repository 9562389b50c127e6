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
#include "nn/model/quant_hooks.h"
#include "nn/train/train_control.h"

namespace vkqat::nn {

// How the training steps reach the device (TrainConfig::pipeline or VKQAT_PIPELINE):
//   Overlap (default): two staging slots, each with its own recorded step and fence. Step
//     i + 1 is submitted before the host waits for step i, so the host loads and stages the
//     next batch while the device trains; each step ends by copying the loss and accuracy
//     totals into its slot, which the host reads after that step's fence (no extra wait);
//     the optimizer is one multi-tensor SGD dispatch (or a few).
//   Sync: the earlier path, kept for comparisons: one recording, submitted and waited for
//     every step, one SGD dispatch per parameter tensor.
// Both give bit-identical training. --profile, data-parallel training and hooks (statistics,
// the visualizer) run one step at a time.
enum class StepPipeline { Sync, Overlap };
// name "" reads VKQAT_PIPELINE; an unknown name throws Error naming where it came from.
StepPipeline step_pipeline(const std::string& name);

struct TrainConfig {
  std::string data = "fashion-mnist", data_dir;
  DataOptions data_options;  // image folders/caches, --augment, --mean/--std (data_options.h)
  ModelConfig model;
  int epochs = 1, batch = 128;
  float lr = 0.1f, momentum = 0.9f, weight_decay = 5e-4f;
  bool nesterov = true;
  float warmup_epochs = 0.f;  // linear warm-up, then cosine to 0
  uint64_t seed = 0;
  int wbits = 32, abits = 32;
  nlohmann::json quant = nullptr;  // quantization config (opaque here; see src/quant/policy.h)
  bool aux = false;                // full-precision auxiliary module
  float aux_weight = 1.f;          // lambda: loss = CE(LP) + lambda CE(aux)
  float lp_weight = 1.f;           // weight of CE(LP) (0 isolates the aux route, for tests)
  std::string out;               // run directory
  std::string init;              // checkpoint to initialise weights from
  // "sat": before training, the last FC's latent weight is rescaled to n_out Var[W] = 1
  // (--fc-init; only where SAT or DoReFa divides that scale out; see rescale_last_fc_init).
  std::string fc_init = "default";
  int train_limit = 0, test_limit = 0;  // use only the first K images (quick runs, tests)
  int log_every = 50;            // steps between metrics.jsonl step records
  int keep_checkpoints = 1;      // committed checkpoint units kept in RUN_DIR/checkpoints
  int stop_after_steps = 0;      // stop (as if interrupted) after this many steps of this process
  bool profile = false;          // print per-dispatch GPU times of one step
  std::string pipeline;          // "overlap" / "sync" (see StepPipeline); "": VKQAT_PIPELINE, else overlap
  // --sync-bn: under mpirun, batch-norm statistics over the global batch (BnStatsSync);
  // one process has the whole batch already (a no-op there).
  bool sync_bn = false;
  // --bucket-mb: under mpirun, the gradients are all-reduced in buckets of about this many
  // MB, each started as soon as the backward has finished it; 0: one all-reduce after the
  // backward. Not stored: it changes no result (see README "Several GPUs").
  float bucket_mb = 0.25f;
  nlohmann::json to_json() const;
  static TrainConfig from_json(const nlohmann::json& j);
};

// What `--resume` may change (0 / empty: keep the run's).
struct ResumeOptions {
  int epochs = 0;
  std::string data_dir;
  int log_every = 0;
  int keep_checkpoints = 0;
  int stop_after_steps = 0;  // this process only (not stored)
  bool profile = false;      // this process only (not stored)
  float bucket_mb = -1;      // this process only (not stored); < 0: the default
};

struct EvalResult {
  double loss = 0, acc = 0;
  int images = 0;
  bool has_aux = false;
  double aux_loss = 0, aux_acc = 0;
  std::vector<int64_t> class_correct, class_total;  // per label (LP head)
};

// The GPU times of one replay of the recorded training step, one entry per command.
struct StepProfile {
  std::vector<DispatchTiming> timings;
  size_t commands = 0;    // commands in the recorded step
  bool complete = false;  // every command timed, timestamps in order (Recording::timings_complete)
};

struct TrainSummary {
  double test_acc = 0, test_loss = 0, train_images_per_s = 0, seconds = 0;
  EvalResult eval;
  int epochs = 0;
  bool interrupted = false;
  nlohmann::json json;  // what summary.json holds
};

class Trainer {
 public:
  // plugins: where quantizers and the auxiliary module come from (needed when cfg asks
  // for quantization or --aux).
  Trainer(Context& ctx, TrainConfig cfg, const QuantPlugins& plugins = {});
  ~Trainer();
  // Continues the run in `run_dir` from its last committed checkpoint (weights, momentum,
  // step, RNG); `change` applies what may change on resume (and logs it).
  static std::unique_ptr<Trainer> resume(Context& ctx, const std::string& run_dir, const ResumeOptions& change = {},
                                         const QuantPlugins& plugins = {});
  // The configuration of the run in `run_dir` as last committed (Error naming the file).
  static TrainConfig stored_config(const std::string& run_dir);

  TrainSummary run();
  EvalResult evaluate();
  Network& network() { return *net_; }
  AuxiliaryHead* aux() { return aux_.get(); }
  const TrainConfig& config() const { return cfg_; }
  // Called from a signal handler: finish the current step, checkpoint, stop.
  static void request_stop();

  // Watchers and controls (see train_control.h); null: none. Not owned.
  void set_hooks(TrainHooks* hooks) { hooks_ = hooks; }
  // Between steps (from a hook): rebuilds the network, its quantizers and the auxiliary
  // head for `next` (other bits, --sat, --aux, lambda, lr), keeping every learned tensor
  // whose name and size still match (weights, BN statistics, alphas, steps, momentum),
  // and re-records the step. Dataset, model, batch and run directory cannot change.
  // Pointers into the old network (network(), aux()) are invalid afterwards.
  void reconfigure(const TrainConfig& next);
  // The peak learning rate of the schedule, from the next step on (no re-recording).
  void set_learning_rate(float lr);
  // Writes checkpoint + trainer state to the run directory now (between steps).
  void save_checkpoint();
  // Per-dispatch GPU times of the last step (config().profile only; empty otherwise).
  StepProfile step_profile() const;
  int64_t steps_per_epoch() const;
  int64_t step() const;  // steps done so far (a resumed run starts at its checkpoint's)
  // Where the host's time went over this process's training steps (vkqat bench, summary.json).
  struct PipelineStats {
    StepPipeline mode = StepPipeline::Overlap;
    int64_t steps = 0;
    double step_seconds = 0;       // wall time of the steps (data loading included)
    double host_wait_seconds = 0;  // of which blocked on step fences
  };
  PipelineStats pipeline_stats() const;

  struct Impl;  // loaders, host staging tensors, the recorded step, progress counters

 private:
  void initialise_quantizers_from_data();
  // Builds net_ (+ quantizers, aux head) for cfg_; returns whether quantizer tensors came from --init.
  // initialising = false (reconfigure: every value is restored afterwards) skips --fc-init.
  bool build_model(bool initialising = true);
  void record_step();  // (re-)records the training step and the evaluator
  void record_data_parallel_step(Recording& rec);  // forward + backward + gradients out (record_step)
  TrainSummary run_loop();
  void broadcast_state();      // rank 0's weights, momenta and train accumulators to every rank
  void check_ranks_agree();    // every rank's parameters equal rank 0's (Error otherwise)
  std::unique_ptr<Impl> impl_;
  TrainConfig cfg_;
  QuantPlugins plugins_;
  TrainHooks* hooks_ = nullptr;
  std::unique_ptr<Network> net_;
  std::unique_ptr<AuxiliaryHead> aux_;
};

// The buffers one recorded training step reads and accumulates into.
struct StepBuffers {
  Tensor* labels;                 // U32 [batch], on the device
  Tensor* step_params;            // F32, lr at index 0 (written by the host before each replay)
  Tensor *loss_sum, *correct;     // LP head accumulators
  Tensor *aux_loss_sum, *aux_correct;  // aux head accumulators (when aux)
};
// Records forward, loss = lp_weight CE(LP) + aux_weight CE(aux), backward and the SGD
// update of every parameter (weight decay only where the parameter asks for it).
void record_training_step(Recording& rec, Network& net, AuxiliaryHead* aux, const TrainConfig& cfg,
                          const StepBuffers& b);
// The two halves of record_training_step, for data-parallel training (the gradients are
// all-reduced between them): forward, loss and backward; then the SGD update.
void record_forward_backward(Recording& rec, Network& net, AuxiliaryHead* aux, const TrainConfig& cfg,
                             const StepBuffers& b);
void record_optimizer(Recording& rec, Network& net, AuxiliaryHead* aux, const TrainConfig& cfg, const StepBuffers& b);
// Every trained parameter in the one fixed order the optimizer and the all-reduce use:
// the network's (incl. quantizer parameters), then the auxiliary module's.
std::vector<Parameter*> trained_parameters(Network& net, AuxiliaryHead* aux);

// Evaluates a checkpoint (vkqat or PyTorch state_dict in safetensors) on a test set.
struct EvalRequest {
  std::string checkpoint, data = "fashion-mnist", data_dir, model;  // model/width: for files without metadata
  int width = 0, batch = 256, limit = 0;
  double width_mult = 0;  // mobilenets, files without metadata: 0 = read from the tensors' shapes
  std::string stem;       // files without metadata: "" = the default (ResNets: from conv1.weight)
  int workers = 0;  // decode threads for folder/cache data (0 = the checkpoint's setting)
};
// Quantized checkpoints need the plugins to rebuild their quantizers.
EvalResult evaluate_checkpoint(Context& ctx, const EvalRequest& req, ModelConfig* used = nullptr,
                               const QuantPlugins& plugins = {});

}  // namespace vkqat::nn

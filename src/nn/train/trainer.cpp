#include "nn/train/trainer.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <deque>
#include <fstream>
#include <map>
#include <set>

#include "backend/error.h"
#include "nn/ops/cross_entropy.h"
#include "nn/ops/sgd.h"
#include "nn/model/model_builders.h"
#include "nn/train/checkpoint.h"
#include "nn/train/distributed.h"
#include "nn/train/gradient_buckets.h"
#include "nn/train/run_state.h"
#include "nn/train/trainer_internal.h"

namespace vkqat::nn {
namespace fs = std::filesystem;
using trainer_detail::absolute_path;
using trainer_detail::Clock;
using trainer_detail::num;
using trainer_detail::seconds_since;

namespace {
std::atomic<bool> g_stop{false};

std::string format_eta(double s) {
  int t = int(s + 0.5);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%d:%02d:%02d", t / 3600, t / 60 % 60, t % 60);
  return buf;
}

// --fc-init sat (README, "The papers' networks"). Where SAT (W* = W / sqrt(n_out Var[W])) or
// DoReFa (tanh(W) / max|tanh(W)|) normalises the last FC's weight, its output does not depend on
// the latent scale (up to tanh's bend), but the step on W* is lr / scale^2: PyTorch's init
// U(+-1/sqrt(n_in)) makes it 3 n_in / n_out times lr's (384x for MobileNetV2's 1280 -> 10 classes),
// and one step at lr 0.005 rewrites the classifier. Rescaled to SAT's own target n_out Var = 1, the
// step is ~lr's. Runs before the quantizers are made (LSQ draws its step from these weights).
void rescale_last_fc_init(Network& net) {
  const LinearLayer* fc = net.quant_sites().classifier;
  if (!fc) throw Error("--fc-init sat: this model has no last fully-connected layer");
  Parameter* w = nullptr;
  for (Parameter* p : net.parameters())
    if (p == &fc->weight) w = p;
  std::vector<float> v = w->value.download();
  double mean = 0, var = 0;
  for (float x : v) mean += x;
  mean /= double(v.size());
  for (float x : v) var += (x - mean) * (x - mean);
  var /= double(v.size());
  if (!(var > 0)) throw Error("--fc-init sat: " + w->name + " is constant (variance 0): nothing to rescale");
  const double factor = 1.0 / std::sqrt(double(fc->out) * var);
  for (float& x : v) x = float(x * factor);
  w->value.upload(v);
}

// After the quantizers: refused where the scale is not divided out (it would change the logits).
void check_last_fc_scale_free(Network& net) {
  const LinearLayer* fc = net.quant_sites().classifier;
  const WeightQuantizer::Kind k = fc->quant ? fc->quant->kind() : WeightQuantizer::Kind{};
  if (k.sat || (k.method == "dorefa" && k.bits >= 2)) return;
  throw Error("--fc-init sat: the last FC (" + fc->weight.name + ", " + (fc->quant ? fc->quant->describe() : "fp32") +
              ") scales its output with its weight, so rescaling would change the logits; it needs --sat or DoReFa "
              "weights of 2+ bits there");
}
}  // namespace

// ---- the step ------------------------------------------------------------------------
Trainer::Trainer(Context& ctx, TrainConfig cfg, const QuantPlugins& plugins)
    : impl_(std::make_unique<Impl>(ctx)), cfg_(std::move(cfg)) {
  Impl& s = *impl_;
  if (cfg_.epochs < 1) throw Error("--epochs must be at least 1, got " + std::to_string(cfg_.epochs));
  // Non-finite hyper-parameters train on NaN from the first step: refused up front.
  if (!(cfg_.lr > 0) || !std::isfinite(cfg_.lr)) throw Error("--lr must be a positive finite number, got " + num(cfg_.lr));
  if (!(cfg_.warmup_epochs >= 0) || !std::isfinite(cfg_.warmup_epochs))
    throw Error("--warmup-epochs must be a finite number >= 0, got " + num(cfg_.warmup_epochs));
  if (!(cfg_.momentum >= 0 && cfg_.momentum < 1)) throw Error("--momentum must be in [0, 1), got " + num(cfg_.momentum));
  if (!(cfg_.weight_decay >= 0) || !std::isfinite(cfg_.weight_decay))
    throw Error("--wd must be a finite number >= 0, got " + num(cfg_.weight_decay));
  if (!(cfg_.aux_weight >= 0) || !std::isfinite(cfg_.aux_weight))
    throw Error("--aux-weight must be a finite number >= 0, got " + num(cfg_.aux_weight));
  if (cfg_.batch < 1) throw Error("--batch-size must be at least 1, got " + std::to_string(cfg_.batch));
  if (cfg_.log_every < 1) throw Error("--log-every must be at least 1, got " + std::to_string(cfg_.log_every));
  if (cfg_.keep_checkpoints < 1)
    throw Error("--keep-checkpoints must be at least 1, got " + std::to_string(cfg_.keep_checkpoints));
  if (cfg_.train_limit < 0) throw Error("--train-limit must be >= 0, got " + std::to_string(cfg_.train_limit));
  if (cfg_.test_limit < 0) throw Error("--test-limit must be >= 0, got " + std::to_string(cfg_.test_limit));
  if (cfg_.stop_after_steps < 0)
    throw Error("--stop-after-steps must be >= 0, got " + std::to_string(cfg_.stop_after_steps));
  if (!(cfg_.bucket_mb >= 0) || !std::isfinite(cfg_.bucket_mb))
    throw Error("--bucket-mb must be a finite number >= 0, got " + num(cfg_.bucket_mb));
  if (cfg_.fc_init != "default" && cfg_.fc_init != "sat")
    throw Error("--fc-init must be default or sat, got '" + cfg_.fc_init + "'");
  // Stored absolute, so that the run resumes from any working directory.
  cfg_.data_dir = absolute_path(cfg_.data_dir);
  cfg_.init = absolute_path(cfg_.init);
  cfg_.out = absolute_path(cfg_.out);
  if (!cfg_.quant.is_null() && !plugins.policy) throw Error("quantized training needs the quantization module");
  if (cfg_.aux && !plugins.aux) throw Error("--aux needs the quantization module");
  std::tie(s.train_set, s.test_set) = load_dataset_splits(cfg_.data, cfg_.data_dir, cfg_.data_options);
  if (cfg_.train_limit > 0) s.train_set = first_n(s.train_set, cfg_.train_limit);
  if (cfg_.test_limit > 0) s.test_set = first_n(s.test_set, cfg_.test_limit);
  if (s.test_set.channels != s.train_set.channels || s.test_set.height != s.train_set.height ||
      s.test_set.width != s.train_set.width || s.test_set.classes != s.train_set.classes)
    throw Error("--data-dir " + (cfg_.data_dir.empty() ? default_data_dir(cfg_.data) : cfg_.data_dir) +
                ": the test images are " + std::to_string(s.test_set.channels) + "x" + std::to_string(s.test_set.height) +
                "x" + std::to_string(s.test_set.width) + " (" + std::to_string(s.test_set.classes) +
                " classes) but the training images are " + std::to_string(s.train_set.channels) + "x" +
                std::to_string(s.train_set.height) + "x" + std::to_string(s.train_set.width) + " (" +
                std::to_string(s.train_set.classes) + " classes)");
  if (s.train_set.n < cfg_.batch)
    throw Error("--batch-size " + std::to_string(cfg_.batch) + " is larger than the " + std::to_string(s.train_set.n) +
                " training images");
  cfg_.model.in_channels = s.train_set.channels;
  cfg_.model.height = s.train_set.height;
  cfg_.model.width_px = s.train_set.width;
  cfg_.model.classes = s.train_set.classes;
  plugins_ = plugins;
  // Data-parallel: --batch-size stays the global batch; each rank trains on its shard.
  s.world = dist::size(), s.rank = dist::rank(), s.data_parallel = dist::active();
  if (cfg_.batch % s.world != 0)
    throw Error("--batch-size " + std::to_string(cfg_.batch) + " (the global batch) does not divide among the " +
                std::to_string(s.world) + " MPI ranks: use a multiple of " + std::to_string(s.world));
  s.local_batch = cfg_.batch / s.world;
  const bool quantizers_loaded = build_model();

  // Streamed sets augment in their source; --augment picks the built-in sets' loader augmentation.
  s.train_loader = std::make_unique<BatchLoader>(
      s.train_set, cfg_.batch, true, cfg_.seed,
      s.train_set.source ? LoaderOptions{} : loader_options_for_augment(cfg_.data_options.augment));

  const int b = s.local_batch;
  s.pipeline = step_pipeline(cfg_.pipeline);
  for (Impl::StepSlot& slot : s.slots) {
    slot.host_x = Tensor(ctx, net_->input().shape(), DType::F32, MemoryKind::Host);
    slot.host_y = Tensor(ctx, {b}, DType::U32, MemoryKind::Host);
    slot.step_params = Tensor(ctx, {4}, DType::F32, MemoryKind::Host);
    slot.totals = Tensor(ctx, {4}, DType::U32, MemoryKind::Host);
  }
  s.labels = Tensor(ctx, {b}, DType::U32);
  s.loss_sum = Tensor(ctx, {1}, DType::F32, MemoryKind::Host);
  s.correct = Tensor(ctx, {1}, DType::U32, MemoryKind::Host);
  s.aux_loss_sum = Tensor(ctx, {1}, DType::F32, MemoryKind::Host);
  s.aux_correct = Tensor(ctx, {1}, DType::U32, MemoryKind::Host);

  if (!quantizers_loaded) initialise_quantizers_from_data();

  record_step();
}

bool Trainer::build_model(bool initialising) {
  Context& ctx = impl_->ctx;
  const QuantPlugins& plugins = plugins_;
  SafeTensors init_ckpt;
  if (!cfg_.init.empty()) {
    init_ckpt = read_safetensors(cfg_.init);
    if (checkpoint_metadata(init_ckpt).is_null()) {  // a PyTorch file: its shapes give the width
      const ModelConfig f = config_from_state_shapes(cfg_.model, init_ckpt);
      cfg_.model.width = f.width, cfg_.model.width_mult = f.width_mult;
      if (!is_mobilenet(f.name)) cfg_.model.stem = f.stem;
    }
  }
  net_ = build_network(ctx, cfg_.model, impl_->local_batch);
  net_->init(cfg_.seed);
  // --init first (full-precision weights; quantizer and aux tensors are picked up below),
  // then the quantizers: LSQ initialises its steps from the weights it is given.
  if (!cfg_.init.empty()) load_network_state(*net_, init_ckpt, {"aux."}, /*ignore_unexpected=*/true);
  if (initialising && cfg_.fc_init == "sat") rescale_last_fc_init(*net_);
  bool quantizers_loaded = false;
  if (!cfg_.quant.is_null()) {
    auto policy = plugins.policy(cfg_.quant);
    net_->apply_quant_policy(*policy);
    if (!cfg_.init.empty()) quantizers_loaded = load_named_tensors(net_->state(), init_ckpt) > 0;
  }
  if (initialising && cfg_.fc_init == "sat") check_last_fc_scale_free(*net_);
  if (cfg_.aux) {
    aux_ = plugins.aux(ctx, *net_);
    aux_->init(cfg_.seed);
    if (!cfg_.init.empty()) load_named_tensors(aux_->state(), init_ckpt);
  }
  // --sync-bn on several ranks: every BN layer (the aux module's too) normalises with the
  // global batch's statistics; the recorded step splits at each (Recording::host_step).
  if (cfg_.sync_bn && impl_->world > 1) {
    if (!impl_->bn_exchange) impl_->bn_exchange = std::make_unique<dist::BatchNormExchange>();
    std::vector<BatchNorm2dLayer*> layers = net_->batchnorm_layers();
    if (aux_) for (BatchNorm2dLayer* b : aux_->batchnorm_layers()) layers.push_back(b);
    for (BatchNorm2dLayer* b : layers) b->sync = impl_->bn_exchange.get();
  }
  return quantizers_loaded;
}

void Trainer::record_step() {
  Impl& s = *impl_;
  s.evaluator.reset();
  // Training step: recorded once per staging slot, replayed every step.
  s.overlap_recorded = s.pipeline == StepPipeline::Overlap && !s.data_parallel && !cfg_.profile;
  for (Impl::StepSlot& slot : s.slots) slot.step.reset();
  for (int k = 0; k < (s.overlap_recorded ? 2 : 1); ++k) {
    Impl::StepSlot& slot = s.slots[size_t(k)];
    slot.step = std::make_unique<Recording>(s.ctx, cfg_.profile);
    Recording& rec = *slot.step;
    // Submitted while the other slot's step may still run: start after it.
    if (s.overlap_recorded) rec.order_after_earlier_submissions();
    const StepBuffers buffers{&s.labels, &slot.step_params, &s.loss_sum, &s.correct, &s.aux_loss_sum, &s.aux_correct};
    if (!s.data_parallel) {
      rec.copy(slot.host_x.view(), net_->input().view(), "upload batch");
      rec.copy(slot.host_y.view(), s.labels.view(), "upload labels");
      record_training_step(rec, *net_, aux_.get(), cfg_, buffers);
      if (s.overlap_recorded) {
        // The totals after this step, for the host to read once this slot's fence signals
        // (the accumulators themselves may by then hold the next step's sums).
        const Tensor* totals[] = {&s.loss_sum, &s.correct, &s.aux_loss_sum, &s.aux_correct};
        for (uint64_t i = 0; i < 4; ++i)
          rec.copy(totals[i]->view(), slot.totals.view().sub(4 * i, 4), "step totals to host");
      }
      rec.finish();
      continue;
    }
    record_data_parallel_step(rec);
    rec.finish();
    const std::vector<Parameter*> params = trained_parameters(*net_, aux_.get());
    s.update_step = std::make_unique<Recording>(s.ctx);
    for (size_t i = 0; i < params.size(); ++i)
      s.update_step->copy(s.grad_flat.view().sub(s.grad_layout.offsets[i], params[i]->grad.bytes()),
                          params[i]->grad.view(), "gradients from host");
    record_optimizer(*s.update_step, *net_, aux_.get(), cfg_, buffers);
    s.update_step->finish();
  }
  s.evaluator = std::make_unique<Evaluator>(s.ctx, *net_, s.test_set, cfg_.seed, aux_.get());
}

std::vector<Parameter*> trained_parameters(Network& net, AuxiliaryHead* aux) {
  std::vector<Parameter*> params = net.parameters();
  if (aux) params.insert(params.end(), aux->parameters().begin(), aux->parameters().end());
  return params;
}

void record_training_step(Recording& rec, Network& net, AuxiliaryHead* aux, const TrainConfig& cfg,
                          const StepBuffers& b) {
  record_forward_backward(rec, net, aux, cfg, b);
  record_optimizer(rec, net, aux, cfg, b);
}

void record_forward_backward(Recording& rec, Network& net, AuxiliaryHead* aux, const TrainConfig& cfg,
                             const StepBuffers& b) {
  net.forward(rec, /*train=*/true);
  if (aux) aux->forward(rec, /*train=*/true);
  // loss = CE(LP) + lambda CE(aux): each head's gradient carries its weight.
  cross_entropy(rec, net.logits(), *b.labels, *b.loss_sum, *b.correct, &net.d_logits(), cfg.lp_weight,
                /*accumulate=*/true);
  if (aux) {
    cross_entropy(rec, aux->logits(), *b.labels, *b.aux_loss_sum, *b.aux_correct, &aux->d_logits(), cfg.aux_weight,
                  /*accumulate=*/true);
    aux->backward(rec);  // writes the gradients the network adds at its taps
  }
  net.backward(rec);
}

void record_optimizer(Recording& rec, Network& net, AuxiliaryHead* aux, const TrainConfig& cfg, const StepBuffers& b) {
  if (step_pipeline(cfg.pipeline) == StepPipeline::Overlap) {
    std::vector<SgdTensor> tensors;
    for (Parameter* p : trained_parameters(net, aux))
      tensors.push_back({&p->value, &p->grad, &p->momentum, p->weight_decay ? cfg.weight_decay : 0.f});
    sgd_update_multi(rec, tensors, *b.step_params, 0, cfg.momentum, cfg.nesterov);
    return;
  }
  for (Parameter* p : trained_parameters(net, aux)) {
    SgdOptions o;
    o.momentum = cfg.momentum;
    o.nesterov = cfg.nesterov;
    o.weight_decay = p->weight_decay ? cfg.weight_decay : 0.f;
    sgd_update(rec, p->value, p->grad, p->momentum, *b.step_params, 0, o);
  }
  net.advance_step(rec);  // after the step's forward/backward: the next step draws new dropout masks
}

// Quantizers that start from data (LSQ activation steps) see the first training batch in
// one forward pass; BatchNorm running statistics are put back afterwards.
void Trainer::initialise_quantizers_from_data() {
  std::vector<ActQuantizer*> wants;
  for (ActQuantizer* q : net_->act_quantizers())
    if (q->wants_data_init()) wants.push_back(q);
  if (wants.empty()) return;
  Impl& s = *impl_;
  std::vector<std::pair<Tensor*, std::vector<float>>> saved;
  std::set<std::string> running;
  for (const std::string& bn : net_->batchnorm_names()) running.insert({bn + ".running_mean", bn + ".running_var"});
  for (const auto& [name, t] : net_->state())
    if (running.count(name)) saved.push_back({t, t->download()});
  Batch first;
  s.train_loader->start_epoch(0);
  s.train_loader->make_batch(0, first);
  take_shard(first, s.rank, s.world, s.shard);
  fill_host_batch(s.slots[0].host_x, s.slots[0].host_y, s.shard);
  // Data-parallel: each rank sees its shard. The mean over the ranks of what they found
  // (LSQ: 2 mean|x| / sqrt(Qp), linear in the shards' means) is the global batch's, the
  // same bits on every rank; it is taken right after each initialisation (a host step),
  // before the layers downstream use it, so with --sync-bn every quantizer starts where
  // one process would (up to float summation order).
  const int world = s.world;
  ActQuantizer::InitMerge merge;
  if (world > 1)
    merge = [world](Recording& rec, Tensor& t) {
      const BufferView host = rec.transient(t.bytes(), MemoryKind::Host);
      const size_t n = size_t(t.numel());
      rec.copy(t.view(), host, "data init to host");
      rec.host_step([host, n, world] {
        auto* v = static_cast<float*>(host.mapped);
        dist::sum_in_rank_order(v, n);
        for (size_t i = 0; i < n; ++i) v[i] /= float(world);
      });
      rec.copy(host, t.view(), "data init from host");
    };
  for (ActQuantizer* q : wants) q->set_data_init(true, merge);
  {
    Recording rec(s.ctx);
    rec.copy(s.slots[0].host_x.view(), net_->input().view(), "upload batch");
    net_->forward(rec, /*train=*/true);
    rec.run();
  }
  for (ActQuantizer* q : wants) q->set_data_init(false);
  for (auto& [t, values] : saved) t->upload(values);
}

Trainer::~Trainer() = default;

void Trainer::request_stop() { g_stop = true; }

static float scheduled_lr(const TrainConfig& c, int64_t step, int64_t steps_per_epoch) {
  const double total = double(c.epochs) * steps_per_epoch;
  const double warm = double(c.warmup_epochs) * steps_per_epoch;
  if (step < warm) return float(c.lr * (step + 1) / warm);
  double t = (step - warm) / std::max(1.0, total - warm);
  return float(c.lr * 0.5 * (1.0 + std::cos(M_PI * t)));
}
// ---- changes while running -----------------------------------------------------------
void Trainer::set_learning_rate(float lr) {
  if (!(lr > 0)) throw Error("learning rate must be positive, got " + std::to_string(lr));
  cfg_.lr = lr;
}

void Trainer::reconfigure(const TrainConfig& next) {
  Impl& s = *impl_;
  if (next.data != cfg_.data || next.model.name != cfg_.model.name || next.model.width != cfg_.model.width ||
      next.batch != cfg_.batch || next.out != cfg_.out)
    throw Error("reconfigure: the dataset, model, batch size and run directory of a running trainer are fixed");
  if (!(next.lr > 0)) throw Error("reconfigure: lr must be positive");
  if (!next.quant.is_null() && !plugins_.policy) throw Error("quantized training needs the quantization module");
  if (next.aux && !plugins_.aux) throw Error("--aux needs the quantization module");
  // Everything learned, by name: state dicts (incl. alphas, steps, aux.*) and momentum.
  std::map<std::string, std::vector<float>> values, momenta;
  auto params = [this] {
    std::vector<Parameter*> p = net_->parameters();
    if (aux_) p.insert(p.end(), aux_->parameters().begin(), aux_->parameters().end());
    return p;
  };
  for (const auto& [name, t] : net_->state()) values[name] = t->download();
  if (aux_)
    for (const auto& [name, t] : aux_->state()) values[name] = t->download();
  for (Parameter* p : params()) momenta[p->name] = p->momentum.download();

  s.evaluator.reset();
  for (Impl::StepSlot& slot : s.slots) slot.step.reset();
  aux_.reset();
  net_.reset();
  const ModelConfig model = cfg_.model;  // with the dataset's image size and classes
  cfg_ = next;
  cfg_.model = model;
  cfg_.init.clear();  // already applied; the values below replace it
  build_model(/*initialising=*/false);
  initialise_quantizers_from_data();  // new LSQ steps; restored below where they existed
  s.train_loader->start_epoch(s.epoch, s.position);
  auto restore = [](const NamedTensors& named, const std::map<std::string, std::vector<float>>& from) {
    for (const auto& [name, t] : named)
      if (auto it = from.find(name); it != from.end() && int64_t(it->second.size()) == t->numel()) t->upload(it->second);
  };
  restore(net_->state(), values);
  if (aux_) restore(aux_->state(), values);
  NamedTensors momentum;
  for (Parameter* p : params()) momentum.push_back({p->name, &p->momentum});
  restore(momentum, momenta);
  record_step();
}

StepProfile Trainer::step_profile() const {
  const Recording& r = *impl_->slots[0].step;
  if (!cfg_.profile) return {};
  return {r.timings(), r.command_count(), r.timings_complete()};
}

int64_t Trainer::steps_per_epoch() const { return impl_->train_loader->batches_per_epoch(); }

int64_t Trainer::step() const { return impl_->step; }

Trainer::PipelineStats Trainer::pipeline_stats() const {
  const Impl& s = *impl_;
  return {s.pipeline, s.loop_steps, s.loop_seconds, s.host_wait_seconds};
}

StepPipeline step_pipeline(const std::string& name) {
  const char* env = std::getenv("VKQAT_PIPELINE");
  const std::string from = name.empty() && env && *env ? "VKQAT_PIPELINE" : "the step pipeline";
  const std::string v = !name.empty() ? name : env && *env ? env : "overlap";
  if (v == "overlap") return StepPipeline::Overlap;
  if (v == "sync") return StepPipeline::Sync;
  throw Error(from + " '" + v + "' is unknown: use overlap or sync");
}

// ---- the loop ------------------------------------------------------------------------
// Under mpirun, an error on one rank stops every rank (MPI_Abort) instead of leaving the
// others waiting in the next all-reduce.
TrainSummary Trainer::run() {
  if (!impl_->data_parallel) return run_loop();
  try {
    return run_loop();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vkqat train: %serror: %s (stopping every rank)\n", dist::rank_prefix().c_str(), e.what());
    dist::abort(1);
  }
}

TrainSummary Trainer::run_loop() {
  Impl& s = *impl_;
  if (cfg_.out.empty()) throw Error("--out RUN_DIR is required");
  const bool root = s.rank == 0;  // only rank 0 writes the run directory
  if (root) {
    std::error_code ec;
    fs::create_directories(cfg_.out, ec);
    if (ec || !fs::is_directory(cfg_.out)) throw Error("--out " + cfg_.out + ": cannot create directory");
    if (!s.train_set.class_names.empty())  // label i is classes.json[i]
      write_file_durably(cfg_.out + "/classes.json", nlohmann::json(s.train_set.class_names).dump(1) + "\n");
  }
  std::ofstream metrics(root ? cfg_.out + "/metrics.jsonl" : "/dev/null", std::ios::app);
  if (!metrics) throw Error("cannot write " + cfg_.out + "/metrics.jsonl");
  // Every rank starts from rank 0's weights (seeded init, --init or --resume alike).
  if (s.world > 1) broadcast_state();
  // A test switch: this rank fails at that step (the others must stop within seconds).
  const char* fault_rank_env = std::getenv("VKQAT_FAULT_RANK");
  const char* fault_step_env = std::getenv("VKQAT_FAULT_STEP");
  const int fault_rank = fault_rank_env ? std::atoi(fault_rank_env) : -1;
  const int64_t fault_step = fault_step_env ? std::atoll(fault_step_env) : 2;

  const bool tty = root && isatty(fileno(stderr));
  const int64_t steps_per_epoch = s.train_loader->batches_per_epoch();
  float* loss_sum = static_cast<float*>(s.loss_sum.view().mapped);
  uint32_t* correct = static_cast<uint32_t*>(s.correct.view().mapped);
  float* aux_loss_sum = static_cast<float*>(s.aux_loss_sum.view().mapped);
  uint32_t* aux_correct = static_cast<uint32_t*>(s.aux_correct.view().mapped);
  // Two steps in flight only without hooks: a hook may pause, reconfigure or save between
  // any two steps, and reads per-step device state.
  const bool overlap = s.overlap_recorded && !hooks_;
  // The train totals after a step: the slot's copy when the step recorded one (the
  // accumulators may already hold the next step's sums), else the accumulators.
  struct Totals {
    float loss = 0;
    uint32_t correct = 0;
    float aux_loss = 0;
    uint32_t aux_correct = 0;
  };
  auto totals_after = [&](const Impl::StepSlot& slot) {
    if (!s.overlap_recorded) return Totals{*loss_sum, *correct, *aux_loss_sum, *aux_correct};
    const uint32_t* w = static_cast<const uint32_t*>(slot.totals.view().mapped);
    Totals t;
    std::memcpy(&t.loss, &w[0], 4), std::memcpy(&t.aux_loss, &w[2], 4);
    t.correct = w[1], t.aux_correct = w[3];
    return t;
  };
  TrainSummary summary;
  EvalResult last_eval;
  // Fraction of the step time spent waiting for the next batch: since the last step
  // record (metrics.jsonl), and over the epoch (progress line and epoch record).
  struct DataWait {
    double interval_wait = 0, interval_total = 0, epoch_wait = 0, epoch_total = 0;
    void add(double w, double t) { interval_wait += w, interval_total += t, epoch_wait += w, epoch_total += t; }
    static double frac(double w, double t) { return t > 0 ? w / t : 0.0; }
  } wait;
  Batch batch;
  const auto run_start = Clock::now();
  if (s.bn_exchange) s.bn_exchange->reset_counts();  // the steps' exchanges only (not LSQ's init)
  if (s.bucket_sums) s.bucket_sums->reset_counts();
  int steps_this_process = 0;
  g_stop = false;
  // Steps submitted and not yet completed, oldest first (overlap: at most one per slot).
  struct InFlight {
    int slot;
    Clock::time_point t0;  // when the host began preparing it
    double waited;         // of which waiting for the data pipeline
    float lr;
    int images;
  };
  std::deque<InFlight> in_flight;
  int next_slot = 0;
  auto interrupt = [&] {
    while (!in_flight.empty()) s.slots[size_t(in_flight.front().slot)].step->wait(), in_flight.pop_front();
    if (s.world > 1) check_ranks_agree();
    save_run_state(cfg_.out, cfg_, *net_, aux_.get(), s);
    if (tty) std::fprintf(stderr, "\n");
    if (root)
      std::fprintf(stderr, "stopped at step %lld; continue with: vkqat train --resume %s\n", (long long)s.step,
                 cfg_.out.c_str());
    summary.interrupted = true;
    return summary;
  };

  while (s.epoch < cfg_.epochs) {
    s.train_loader->start_epoch(s.epoch, s.position);
    if (s.position == 0) {
      *loss_sum = 0.f, *correct = 0;
      *aux_loss_sum = 0.f, *aux_correct = 0;
      s.log_loss_base = 0.f, s.log_correct_base = 0, s.log_position_base = 0;
    }
    Totals last{*loss_sum, *correct, *aux_loss_sum, *aux_correct};  // after the last completed step
    auto epoch_start = Clock::now(), log_start = epoch_start, last_done = epoch_start;
    wait = DataWait{};
    const int epoch_start_position = s.position;
    // Waits for the oldest step in flight and does what the host does with a finished
    // step (divergence guard, counters, hooks, logs); returns whether to stop the run.
    auto complete_oldest = [&]() -> bool {
      const InFlight f = in_flight.front();
      in_flight.pop_front();
      Impl::StepSlot& slot = s.slots[size_t(f.slot)];
      s.host_wait_seconds += slot.step->wait();
      bool stop_everywhere = g_stop;
      if (s.data_parallel) {
        // Sum of the ranks' mean gradients / N = the gradient of the global batch's mean loss
        // (cross_entropy scales by 1 / local batch).
        // The barrier separates waiting for the slowest rank (load imbalance) from the
        // all-reduce itself in the reported times.
        const auto tw = Clock::now();
        if (s.world > 1) dist::barrier();
        const auto ta = Clock::now();
        s.wait_seconds += std::chrono::duration<double>(ta - tw).count();
        float* g = static_cast<float*>(s.grad_flat.view().mapped);
        if (s.bucket_sums)
          s.bucket_sums->wait_all();  // started during the backward (record_data_parallel_step)
        else
          dist::allreduce_sum(g, size_t(s.grad_floats));
        if (s.world > 1)
          for (int64_t i = 0; i < s.grad_floats; ++i) g[i] *= 1.f / float(s.world);
        const auto tu = Clock::now();
        s.allreduce_seconds += std::chrono::duration<double>(tu - ta).count();
        s.update_step->run();
        s.update_seconds += seconds_since(tu);
        ++s.data_parallel_steps;
        // This step's loss and accuracy over the global batch, and the stop flag of any rank
        // (a signal reaches each rank at another moment): one small all-reduce.
        float tiny[5] = {*loss_sum - last.loss, float(*correct - last.correct), *aux_loss_sum - last.aux_loss,
                         float(*aux_correct - last.aux_correct), g_stop ? 1.f : 0.f};
        dist::allreduce_sum(tiny, 5);
        *loss_sum = last.loss + tiny[0], *correct = last.correct + uint32_t(tiny[1]);
        *aux_loss_sum = last.aux_loss + tiny[2], *aux_correct = last.aux_correct + uint32_t(tiny[3]);
        stop_everywhere = tiny[4] > 0;
      }
      const Totals before = last, now = totals_after(slot);
      last = now;
      // The divergence guard: the totals are host-visible and this step has completed, so
      // the check costs no extra synchronization.
      if (!std::isfinite(now.loss) || (aux_ && !std::isfinite(now.aux_loss))) {
        const bool lp = !std::isfinite(now.loss);
        const double step_loss = lp ? (now.loss - before.loss) / f.images : (now.aux_loss - before.aux_loss) / f.images;
        const int64_t last_committed = committed_step(cfg_.out);
        if (tty) std::fprintf(stderr, "\n");
        throw Error("training diverged at step " + std::to_string(s.step + 1) + " (epoch " + std::to_string(s.epoch + 1) +
                    ", lr " + num(f.lr) + "): " + (lp ? "loss " : "aux head loss ") + num(step_loss) + "; " +
                    (last_committed >= 0 ? "the last good checkpoint, step " + std::to_string(last_committed) + ", is " +
                                               cfg_.out + "/" + kCheckpointFile +
                                               " (continue with: vkqat train --resume " + cfg_.out + ")"
                                         : std::string("no checkpoint was saved yet")) +
                    "; a lower --lr or more --warmup-epochs avoids this");
      }
      // Overlapped steps share wall time: each counts from when the previous one completed.
      const double step_seconds = seconds_since(std::max(f.t0, last_done));
      last_done = Clock::now();
      s.train_seconds += step_seconds;
      s.loop_seconds += step_seconds, ++s.loop_steps;
      wait.add(f.waited, step_seconds);
      s.train_images += f.images;
      ++s.step, ++s.position, ++steps_this_process;
      if (hooks_) {
        StepReport r;
        r.step = s.step, r.epoch = s.epoch + 1, r.position = s.position, r.steps_per_epoch = steps_per_epoch;
        r.lr = f.lr;
        r.loss = (now.loss - before.loss) / f.images, r.acc = double(now.correct - before.correct) / f.images;
        r.has_aux = aux_ != nullptr;
        r.aux_loss = (now.aux_loss - before.aux_loss) / f.images;
        r.aux_acc = double(now.aux_correct - before.aux_correct) / f.images;
        r.step_seconds = step_seconds;
        r.images_per_s = f.images / std::max(1e-9, r.step_seconds);
        hooks_->after_step(*this, r);
      }

      if (cfg_.profile && steps_this_process == 3) {
        const StepProfile p = step_profile();
        double total = 0;
        for (const DispatchTiming& t : p.timings) total += t.ms;
        std::fprintf(stderr, "\nGPU time of training step %lld: %.2f ms (%zu commands, %zu timed%s, %zu barriers)\n",
                     (long long)s.step, total, p.commands, p.timings.size(),
                     p.complete ? "" : ", timestamps incomplete or out of order", slot.step->barrier_count());
        for (const LabelTime& k : group_by_label(p.timings))
          std::fprintf(stderr, "  %-36s %8.3f ms %5.1f%%  x%d\n", k.label.c_str(), k.ms, 100 * k.ms / total, k.commands);
      }
      // Records fall on fixed positions of the epoch, whatever the process history.
      const bool log_now = s.position % cfg_.log_every == 0 || s.position == steps_per_epoch;
      if (log_now || tty) {
        const double n = double(s.position - s.log_position_base) * cfg_.batch;
        const double loss = (now.loss - s.log_loss_base) / n, acc = (now.correct - s.log_correct_base) / n;
        const double ips = double(s.position - std::max(s.log_position_base, epoch_start_position)) * cfg_.batch /
                           seconds_since(log_start);
        if (log_now) {
          nlohmann::json rec = {{"type", "step"}, {"epoch", s.epoch + 1}, {"step", s.step}, {"lr", f.lr},
                                {"loss", loss}, {"acc", acc}, {"images_per_s", ips},
                                {"data_wait", DataWait::frac(wait.interval_wait, wait.interval_total)}};
          wait.interval_wait = wait.interval_total = 0;
          if (aux_) {  // epoch-running means of the aux head (its interval bases are not kept)
            const double m = double(s.position) * cfg_.batch;
            rec["aux_loss_epoch"] = now.aux_loss / m;
            rec["aux_acc_epoch"] = now.aux_correct / m;
          }
          metrics << rec.dump() << "\n";
          metrics.flush();
          if (!metrics) throw Error("cannot write " + cfg_.out + "/metrics.jsonl (disk full?)");
          s.log_loss_base = now.loss, s.log_correct_base = now.correct, s.log_position_base = s.position;
          log_start = Clock::now();
        }
        if (tty) {
          double done = double(s.position) / steps_per_epoch;
          double eta = seconds_since(epoch_start) / std::max(1e-9, done) * (1 - done);
          std::fprintf(stderr, "\repoch %d/%d  step %d/%lld  loss %.4f  acc %5.1f%%  %6.0f img/s  data wait %3.0f%%  ETA %s   ",
                       s.epoch + 1, cfg_.epochs, s.position, (long long)steps_per_epoch, now.loss / (s.position * cfg_.batch),
                       100.0 * now.correct / (s.position * cfg_.batch), s.train_images / s.train_seconds,
                       100.0 * DataWait::frac(wait.epoch_wait, wait.epoch_total), format_eta(eta).c_str());
        }
      }
      return (s.data_parallel ? stop_everywhere : g_stop.load()) ||
             (cfg_.stop_after_steps > 0 && steps_this_process >= cfg_.stop_after_steps);
    };
    bool stop = false;
    while (!stop) {
      if (hooks_ && !hooks_->before_step(*this)) return interrupt();  // may also pause or reconfigure
      // --stop-after-steps: no step beyond the last one is submitted.
      if (cfg_.stop_after_steps > 0 && steps_this_process + int(in_flight.size()) >= cfg_.stop_after_steps) break;
      auto t0 = Clock::now();
      if (!s.train_loader->next(batch)) break;
      const double waited = seconds_since(t0);  // time the device waited for the data pipeline
      // The slot's previous step has completed (at most one other step is in flight).
      Impl::StepSlot& slot = s.slots[size_t(next_slot)];
      take_shard(batch, s.rank, s.world, s.shard);
      fill_host_batch(slot.host_x, slot.host_y, s.shard);
      const int64_t step_index = s.step + int64_t(in_flight.size());
      const float lr = scheduled_lr(cfg_, step_index, steps_per_epoch);
      static_cast<float*>(slot.step_params.view().mapped)[0] = lr;
      if (s.rank == fault_rank && step_index + 1 == fault_step)
        throw Error("VKQAT_FAULT_RANK=" + std::to_string(fault_rank) + ": simulated failure at step " +
                    std::to_string(fault_step));
      slot.step->submit();
      in_flight.push_back({next_slot, t0, waited, lr, batch.size});
      if (overlap) next_slot ^= 1;
      // Overlap: step i is queued behind step i - 1; complete i - 1 while the device runs i.
      while (!stop && in_flight.size() > (overlap ? 1u : 0u)) stop = complete_oldest();
    }
    while (!in_flight.empty()) stop = complete_oldest() || stop;
    if (stop) return interrupt();
    const double train_loss = last.loss / double(steps_per_epoch * cfg_.batch);
    const double train_acc = last.correct / double(steps_per_epoch * cfg_.batch);
    if (root) last_eval = evaluate();  // the test set on rank 0 only (its BN statistics are saved)
    if (hooks_) hooks_->after_epoch(*this, {s.epoch + 1, s.step, train_loss, train_acc, &last_eval});
    metrics << nlohmann::json{{"type", "epoch"},         {"epoch", s.epoch + 1},       {"step", s.step},
                              {"train_loss", train_loss}, {"train_acc", train_acc},     {"test_loss", last_eval.loss},
                              {"test_acc", last_eval.acc},
                              {"aux_test_acc", last_eval.has_aux ? nlohmann::json(last_eval.aux_acc) : nlohmann::json()},
                              {"images_per_s", s.train_images / s.train_seconds},
                              {"data_wait", DataWait::frac(wait.epoch_wait, wait.epoch_total)}}
                   .dump()
            << "\n";
    metrics.flush();
    if (!metrics) throw Error("cannot write " + cfg_.out + "/metrics.jsonl (disk full?)");
    if (tty) std::fprintf(stderr, "\n");
    if (root) {
      std::fprintf(stderr, "epoch %d/%d: train loss %.4f acc %.2f%% | test loss %.4f acc %.2f%%", s.epoch + 1, cfg_.epochs,
                   train_loss, 100 * train_acc, last_eval.loss, 100 * last_eval.acc);
      if (last_eval.has_aux) std::fprintf(stderr, " | aux head test acc %.2f%%", 100 * last_eval.aux_acc);
      std::fprintf(stderr, " | %.0f img/s\n", s.train_images / s.train_seconds);
    }
    ++s.epoch, s.position = 0;
    if (s.world > 1) check_ranks_agree();
    save_run_state(cfg_.out, cfg_, *net_, aux_.get(), s);  // a finished epoch is never lost
  }
  if (root && last_eval.images == 0) last_eval = evaluate();  // resumed a run that had already finished

  summary.eval = last_eval;
  summary.test_acc = last_eval.acc;
  summary.test_loss = last_eval.loss;
  summary.epochs = cfg_.epochs;
  summary.train_images_per_s = s.train_seconds > 0 ? s.train_images / s.train_seconds : 0;
  summary.seconds = seconds_since(run_start);
  summary.json = {{"test_acc", summary.test_acc},
                  {"test_loss", summary.test_loss},
                  {"aux_test_acc", last_eval.has_aux ? nlohmann::json(last_eval.aux_acc) : nlohmann::json()},
                  {"train_images_per_s", summary.train_images_per_s},
                  {"epochs", summary.epochs},
                  {"steps", s.step},
                  {"seconds", summary.seconds},
                  {"train_seconds", s.train_seconds},
                  {"device", s.ctx.info().name + " (" + s.ctx.info().driver_name + ")"},
                  {"parameters", net_->parameter_count()},
                  {"config", cfg_.to_json()}};
  // Where the host's time per step went (this process): blocked on step fences vs the rest.
  const double n_steps = double(std::max<int64_t>(1, s.loop_steps));
  summary.json["pipeline"] = {{"mode", s.overlap_recorded && !hooks_ ? "overlap" : "sync"},
                              {"steps", s.loop_steps},
                              {"ms_per_step", 1e3 * s.loop_seconds / n_steps},
                              {"host_wait_ms_per_step", 1e3 * s.host_wait_seconds / n_steps}};
  if (s.data_parallel) {
    // What the data-parallel step costs beyond the single-process one (per step, this rank).
    const double n = double(std::max<int64_t>(1, s.data_parallel_steps));
    summary.json["data_parallel"] = {{"ranks", s.world},
                                     {"batch_per_rank", s.local_batch},
                                     {"gradient_bytes", s.grad_floats * 4},
                                     {"wait_ms_per_step", 1e3 * s.wait_seconds / n},
                                     {"buckets", s.grad_layout.buckets.size()},
                                     {"bucket_mb", s.bucket_sums ? std::round(double(cfg_.bucket_mb) * 1e6) / 1e6 : 0.0},
                                     {"allreduce_ms_per_step",
                                      1e3 * (s.bucket_sums ? s.bucket_sums->in_flight_seconds() : s.allreduce_seconds) / n},
                                     {"exposed_allreduce_ms_per_step", 1e3 * s.allreduce_seconds / n},
                                     {"update_ms_per_step", 1e3 * s.update_seconds / n}};
    if (root)
      std::fprintf(stderr, "data-parallel over %d ranks, per step: %.2f ms waiting for the slowest rank, %.2f ms "
                   "all-reduce of %.2f MB of gradients in %zu bucket%s (%.2f ms of it after the backward), %.2f ms "
                   "optimizer recording\n", s.world, 1e3 * s.wait_seconds / n,
                   summary.json["data_parallel"]["allreduce_ms_per_step"].get<double>(), s.grad_floats * 4e-6,
                   s.grad_layout.buckets.size(), s.grad_layout.buckets.size() == 1 ? "" : "s",
                   1e3 * s.allreduce_seconds / n, 1e3 * s.update_seconds / n);
    if (s.bn_exchange) {
      // The recorded step runs as segments with a host exchange between each two.
      const size_t segments = s.slots[0].step->host_step_count() + 1;
      summary.json["data_parallel"]["sync_bn"] = {{"segments", segments},
                                                  {"exchanges_per_step", double(s.bn_exchange->exchanges()) / n},
                                                  {"exchange_ms_per_step", 1e3 * s.bn_exchange->seconds() / n}};
      if (root)
        std::fprintf(stderr, "--sync-bn: the step runs in %zu segments, %.2f ms per step in %.0f statistics "
                     "exchanges (waiting for the slowest rank included)\n", segments,
                     1e3 * s.bn_exchange->seconds() / n, double(s.bn_exchange->exchanges()) / n);
    }
  }
  if (!root) return summary;
  write_file_durably(cfg_.out + "/summary.json", summary.json.dump(2) + "\n");
  return summary;
}
}  // namespace vkqat::nn

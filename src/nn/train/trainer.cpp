#include "nn/train/trainer.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <algorithm>
#include <map>
#include <set>

#include "backend/error.h"
#include "backend/recording.h"
#include "nn/data/loader.h"
#include "nn/ops/cross_entropy.h"
#include "nn/ops/sgd.h"
#include "nn/train/checkpoint.h"
#include "nn/train/run_state.h"

namespace vkqat::nn {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {
std::atomic<bool> g_stop{false};

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

std::string format_eta(double s) {
  int t = int(s + 0.5);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%d:%02d:%02d", t / 3600, t / 60 % 60, t % 60);
  return buf;
}

// "nan" / "inf" / "1e+06" for messages.
std::string num(double v) {
  if (std::isnan(v)) return "nan";  // not "-nan"
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

std::string absolute_path(const std::string& p) {
  if (p.empty()) return p;
  std::error_code ec;
  fs::path a = fs::absolute(p, ec).lexically_normal();
  if (!a.has_filename() && a.has_parent_path() && a != a.root_path()) a = a.parent_path();  // "dir/" -> "dir"
  return ec ? p : a.string();
}
}  // namespace

// ---- evaluation ----------------------------------------------------------------------
static void fill_host_batch(Tensor& host_x, Tensor& host_y, const Batch& b);

// Test-set evaluation of a network: its own recording (eval-mode forward + loss), replayed
// per batch; a partial last batch is padded with ignored rows.
class Evaluator {
 public:
  Evaluator(Context& ctx, Network& net, const Dataset& data, uint64_t seed, AuxiliaryHead* aux = nullptr)
      : host_x_(ctx, net.input().shape(), DType::F32, MemoryKind::Host),
        host_y_(ctx, {net.batch()}, DType::U32, MemoryKind::Host),
        labels_(ctx, {net.batch()}, DType::U32),
        loss_sum_(ctx, {1}, DType::F32, MemoryKind::Host),
        correct_(ctx, {1}, DType::U32, MemoryKind::Host),
        aux_loss_sum_(ctx, {1}, DType::F32, MemoryKind::Host),
        aux_correct_(ctx, {1}, DType::U32, MemoryKind::Host),
        host_logits_(ctx, net.logits().shape(), DType::F32, MemoryKind::Host),
        loader_(data, net.batch(), false, seed),
        rec_(ctx),
        has_aux_(aux != nullptr) {
    const auto& in = net.input().shape();  // [batch, channels, height, width]
    if (data.channels != in[1] || data.height != in[2] || data.width != in[3])
      throw Error("the " + data.name + " test images are " + std::to_string(data.channels) + "x" +
                  std::to_string(data.height) + "x" + std::to_string(data.width) + ", the network takes " +
                  std::to_string(in[1]) + "x" + std::to_string(in[2]) + "x" + std::to_string(in[3]));
    rec_.copy(host_x_.view(), net.input().view(), "upload batch");
    rec_.copy(host_y_.view(), labels_.view(), "upload labels");
    net.forward(rec_, /*train=*/false);
    cross_entropy(rec_, net.logits(), labels_, loss_sum_, correct_, nullptr, 1.f, /*accumulate=*/true);
    rec_.copy(net.logits().view(), host_logits_.view(), "download logits");  // per-class accuracy
    if (aux) {
      aux->forward(rec_, /*train=*/false);
      cross_entropy(rec_, aux->logits(), labels_, aux_loss_sum_, aux_correct_, nullptr, 1.f, /*accumulate=*/true);
    }
    rec_.finish();
  }
  EvalResult run() {
    float* loss = static_cast<float*>(loss_sum_.view().mapped);
    uint32_t* correct = static_cast<uint32_t*>(correct_.view().mapped);
    float* aux_loss = static_cast<float*>(aux_loss_sum_.view().mapped);
    uint32_t* aux_correct = static_cast<uint32_t*>(aux_correct_.view().mapped);
    *loss = *aux_loss = 0.f, *correct = *aux_correct = 0;
    loader_.start_epoch(0);
    Batch b;
    EvalResult r;
    const int k = host_logits_.dim(1);
    r.class_correct.assign(size_t(k), 0), r.class_total.assign(size_t(k), 0);
    const float* logits = static_cast<const float*>(host_logits_.view().mapped);
    while (loader_.next(b)) {
      fill_host_batch(host_x_, host_y_, b);
      rec_.run();
      r.images += b.size;
      for (int i = 0; i < b.size; ++i) {
        const float* row = logits + size_t(i) * k;
        const uint32_t y = b.y[size_t(i)];
        if (y >= uint32_t(k)) continue;
        r.class_total[y]++;
        r.class_correct[y] += int(std::max_element(row, row + k) - row) == int(y);
      }
    }
    r.loss = *loss / std::max(1, r.images);
    r.acc = double(*correct) / std::max(1, r.images);
    r.has_aux = has_aux_;
    r.aux_loss = *aux_loss / std::max(1, r.images);
    r.aux_acc = double(*aux_correct) / std::max(1, r.images);
    return r;
  }

 private:
  Tensor host_x_, host_y_, labels_, loss_sum_, correct_, aux_loss_sum_, aux_correct_, host_logits_;
  BatchLoader loader_;
  Recording rec_;
  bool has_aux_;
};

// ---- the step ------------------------------------------------------------------------
struct Trainer::Impl {
  Context& ctx;
  Dataset train_set, test_set;
  std::unique_ptr<BatchLoader> train_loader;
  Tensor host_x, host_y, labels, step_params;  // host_*: written by the CPU before each replay
  Tensor loss_sum, correct;                    // train accumulators (reset each epoch)
  Tensor aux_loss_sum, aux_correct;            // the same for the auxiliary head
  std::unique_ptr<Recording> train_step;
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
  explicit Impl(Context& c) : ctx(c) {}
};

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
  const bool quantizers_loaded = build_model();

  // Streamed sets augment in their source; --augment picks the built-in sets' loader augmentation.
  s.train_loader = std::make_unique<BatchLoader>(
      s.train_set, cfg_.batch, true, cfg_.seed,
      s.train_set.source ? LoaderOptions{} : loader_options_for_augment(cfg_.data_options.augment));

  const int b = cfg_.batch;
  s.host_x = Tensor(ctx, net_->input().shape(), DType::F32, MemoryKind::Host);
  s.host_y = Tensor(ctx, {b}, DType::U32, MemoryKind::Host);
  s.labels = Tensor(ctx, {b}, DType::U32);
  s.step_params = Tensor(ctx, {4}, DType::F32, MemoryKind::Host);
  s.loss_sum = Tensor(ctx, {1}, DType::F32, MemoryKind::Host);
  s.correct = Tensor(ctx, {1}, DType::U32, MemoryKind::Host);
  s.aux_loss_sum = Tensor(ctx, {1}, DType::F32, MemoryKind::Host);
  s.aux_correct = Tensor(ctx, {1}, DType::U32, MemoryKind::Host);

  if (!quantizers_loaded) initialise_quantizers_from_data();

  record_step();
}

bool Trainer::build_model() {
  Context& ctx = impl_->ctx;
  const QuantPlugins& plugins = plugins_;
  net_ = build_network(ctx, cfg_.model, cfg_.batch);
  net_->init(cfg_.seed);
  // --init first (full-precision weights; quantizer and aux tensors are picked up below),
  // then the quantizers: LSQ initialises its steps from the weights it is given.
  SafeTensors init_ckpt;
  if (!cfg_.init.empty()) {
    init_ckpt = read_safetensors(cfg_.init);
    load_network_state(*net_, init_ckpt, {"aux."}, /*ignore_unexpected=*/true);
  }
  bool quantizers_loaded = false;
  if (!cfg_.quant.is_null()) {
    auto policy = plugins.policy(cfg_.quant);
    net_->apply_quant_policy(*policy);
    if (!cfg_.init.empty()) quantizers_loaded = load_named_tensors(net_->state(), init_ckpt) > 0;
  }
  if (cfg_.aux) {
    aux_ = plugins.aux(ctx, *net_);
    aux_->init(cfg_.seed);
    if (!cfg_.init.empty()) load_named_tensors(aux_->state(), init_ckpt);
  }
  return quantizers_loaded;
}

void Trainer::record_step() {
  Impl& s = *impl_;
  s.evaluator.reset();
  // Training step: recorded once, replayed every step.
  s.train_step = std::make_unique<Recording>(s.ctx, cfg_.profile);
  Recording& rec = *s.train_step;
  rec.copy(s.host_x.view(), net_->input().view(), "upload batch");
  rec.copy(s.host_y.view(), s.labels.view(), "upload labels");
  record_training_step(rec, *net_, aux_.get(), cfg_,
                       {&s.labels, &s.step_params, &s.loss_sum, &s.correct, &s.aux_loss_sum, &s.aux_correct});
  rec.finish();
  s.evaluator = std::make_unique<Evaluator>(s.ctx, *net_, s.test_set, cfg_.seed, aux_.get());
}

void record_training_step(Recording& rec, Network& net, AuxiliaryHead* aux, const TrainConfig& cfg,
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
  std::vector<Parameter*> params = net.parameters();
  if (aux) params.insert(params.end(), aux->parameters().begin(), aux->parameters().end());
  for (Parameter* p : params) {
    SgdOptions o;
    o.momentum = cfg.momentum;
    o.nesterov = cfg.nesterov;
    o.weight_decay = p->weight_decay ? cfg.weight_decay : 0.f;
    sgd_update(rec, p->value, p->grad, p->momentum, *b.step_params, 0, o);
  }
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
  fill_host_batch(s.host_x, s.host_y, first);
  for (ActQuantizer* q : wants) q->set_data_init(true);
  {
    Recording rec(s.ctx);
    rec.copy(s.host_x.view(), net_->input().view(), "upload batch");
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

static void fill_host_batch(Tensor& host_x, Tensor& host_y, const Batch& b) {
  float* x = static_cast<float*>(host_x.view().mapped);
  uint32_t* y = static_cast<uint32_t*>(host_y.view().mapped);
  const size_t per_image = size_t(host_x.numel()) / host_x.dim(0);
  // A batch of other-sized images would write past the staging buffer.
  if (b.x.size() != size_t(b.size) * per_image || b.y.size() != size_t(b.size) || b.size > host_x.dim(0))
    throw Error("batch of " + std::to_string(b.size) + " images does not fit the network's input " +
                host_x.shape_str());
  std::memcpy(x, b.x.data(), b.x.size() * sizeof(float));
  std::memcpy(y, b.y.data(), b.y.size() * sizeof(uint32_t));
  for (int i = b.size; i < host_x.dim(0); ++i) {  // pad a partial batch; its rows are ignored
    std::memset(x + size_t(i) * per_image, 0, per_image * sizeof(float));
    y[i] = kIgnoreLabel;
  }
}

EvalResult Trainer::evaluate() { return impl_->evaluator->run(); }

// ---- checkpoints ---------------------------------------------------------------------

static nlohmann::json model_metadata(const TrainConfig& c, const Dataset& d) {
  return {{"format", "vkqat-checkpoint-1"},
          {"model", c.model.to_json()},
          {"dataset", c.data},
          {"normalization", {{"mean", d.mean}, {"std", d.std}}},
          {"wbits", c.wbits},
          {"abits", c.abits},
          {"quant", c.quant},
          {"aux", c.aux},
          {"classes", d.class_names},
          {"data_options", c.data_options.to_json()}};
}

// Trainer state lives beside the checkpoint (so the checkpoint stays a plain state_dict):
// momentum buffers, the epoch's running train metrics, and where the data order stands.
static void save_run_state(const std::string& dir, const TrainConfig& cfg, Network& net, AuxiliaryHead* aux,
                           Trainer::Impl& s) {
  SafeTensors model = network_state(net, s.step);
  std::vector<Parameter*> params = net.parameters();
  if (aux) {
    for (const auto& [name, t] : aux->state())
      model.add_f32(name, std::vector<int64_t>(t->shape().begin(), t->shape().end()), t->download());
    for (const std::string& bn : aux->batchnorm_names()) model.add_i64(bn + ".num_batches_tracked", {}, {s.step});
    params.insert(params.end(), aux->parameters().begin(), aux->parameters().end());
  }
  nlohmann::json meta = model_metadata(cfg, s.train_set);
  meta["step"] = s.step;
  model.metadata["vkqat"] = meta.dump();
  SafeTensors state;
  for (Parameter* p : params) state.add_f32(p->name + ".momentum", {p->value.numel()}, p->momentum.download());
  state.add_f32("train.loss_sum", {1}, s.loss_sum.download());
  state.add_i64("train.correct", {1}, {int64_t(s.correct.download_u32()[0])});
  state.add_f32("train.aux_loss_sum", {1}, s.aux_loss_sum.download());
  state.add_i64("train.aux_correct", {1}, {int64_t(s.aux_correct.download_u32()[0])});
  nlohmann::json t = {{"config", cfg.to_json()},
                      {"epoch", s.epoch},
                      {"position", s.position},
                      {"step", s.step},
                      {"train_seconds", s.train_seconds},
                      {"train_images", s.train_images},
                      {"log_loss_base", s.log_loss_base},
                      {"log_correct_base", s.log_correct_base},
                      {"log_position_base", s.log_position_base}};
  state.metadata["trainer"] = t.dump();
  // Non-finite weights never replace a good checkpoint (the divergence guard's last line).
  std::string bad = first_non_finite_tensor(model);
  if (bad.empty()) bad = first_non_finite_tensor(state);
  if (!bad.empty()) {
    const int64_t last = committed_step(dir);
    throw Error("training diverged: '" + bad + "' holds non-finite values at step " + std::to_string(s.step) +
                "; not saved. " +
                (last >= 0 ? "The last good checkpoint (step " + std::to_string(last) + ") is " + dir + "/" +
                                 kCheckpointFile + "; continue from it with: vkqat train --resume " + dir
                           : std::string("No checkpoint was saved before.")) +
                " (a lower --lr or more --warmup-epochs avoids this)");
  }
  commit_run_state(dir, s.step, model, state, cfg.keep_checkpoints);
}

void Trainer::save_checkpoint() {
  if (cfg_.out.empty()) throw Error("saving a checkpoint needs --out RUN_DIR");
  save_run_state(cfg_.out, cfg_, *net_, aux_.get(), *impl_);
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
  s.train_step.reset();
  aux_.reset();
  net_.reset();
  const ModelConfig model = cfg_.model;  // with the dataset's image size and classes
  cfg_ = next;
  cfg_.model = model;
  cfg_.init.clear();  // already applied; the values below replace it
  build_model();
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
  const Recording& r = *impl_->train_step;
  if (!cfg_.profile) return {};
  return {r.timings(), r.command_count(), r.timings_complete()};
}

int64_t Trainer::steps_per_epoch() const { return impl_->train_loader->batches_per_epoch(); }

int64_t Trainer::step() const { return impl_->step; }

namespace {
struct StoredTrainer {
  nlohmann::json t;  // the "trainer" metadata
  TrainConfig cfg;
};
StoredTrainer read_trainer_metadata(const SafeTensors& state, const std::string& path) {
  StoredTrainer r;
  auto it = state.metadata.find("trainer");
  if (it == state.metadata.end()) throw Error(path + ": no trainer metadata (not a vkqat trainer state)");
  r.t = nlohmann::json::parse(it->second, nullptr, false);
  if (r.t.is_discarded() || !r.t.is_object()) throw Error(path + ": the trainer metadata is not a JSON object");
  try {
    r.cfg = TrainConfig::from_json(r.t.at("config"));
    for (const char* key : {"epoch", "position", "step", "train_images", "log_correct_base", "log_position_base"})
      if (!r.t.at(key).is_number_integer() || r.t.at(key).get<int64_t>() < 0)
        throw Error(std::string("'") + key + "' must be a non-negative integer");
    for (const char* key : {"train_seconds", "log_loss_base"})
      if (!r.t.at(key).is_number()) throw Error(std::string("'") + key + "' must be a number");
  } catch (const nlohmann::json::exception& e) {
    throw Error(path + ": trainer metadata: " + e.what());
  } catch (const Error& e) {
    throw Error(path + ": trainer metadata: " + e.what());
  }
  return r;
}
}  // namespace

TrainConfig Trainer::stored_config(const std::string& dir) {
  if (!fs::is_directory(dir)) throw Error("--resume " + dir + ": not a directory");
  const CommittedRunState on_disk = load_run_state(dir);
  return read_trainer_metadata(on_disk.trainer_state, on_disk.trainer_state_path).cfg;
}

std::unique_ptr<Trainer> Trainer::resume(Context& ctx, const std::string& dir, const ResumeOptions& change,
                                         const QuantPlugins& plugins) {
  if (!fs::is_directory(dir)) throw Error("--resume " + dir + ": not a directory");
  const CommittedRunState on_disk = load_run_state(dir);
  const std::string& state_path = on_disk.trainer_state_path;
  const std::string& ckpt_path = on_disk.checkpoint_path;
  const SafeTensors& state = on_disk.trainer_state;
  const StoredTrainer stored = read_trainer_metadata(state, state_path);
  const nlohmann::json& t = stored.t;
  TrainConfig cfg = stored.cfg;
  cfg.out = dir;
  auto note = [&](const char* flag, const std::string& from, const std::string& to) {
    if (from != to) std::fprintf(stderr, "resume: %s changed from %s to %s\n", flag, from.c_str(), to.c_str());
  };
  if (change.epochs > 0) note("--epochs", std::to_string(cfg.epochs), std::to_string(change.epochs)), cfg.epochs = change.epochs;
  if (!change.data_dir.empty()) {
    const std::string abs = absolute_path(change.data_dir);
    note("--data-dir", cfg.data_dir.empty() ? "(default)" : cfg.data_dir, abs);
    cfg.data_dir = abs;
  }
  if (change.log_every != 0) note("--log-every", std::to_string(cfg.log_every), std::to_string(change.log_every)), cfg.log_every = change.log_every;
  if (change.keep_checkpoints != 0)
    note("--keep-checkpoints", std::to_string(cfg.keep_checkpoints), std::to_string(change.keep_checkpoints)),
        cfg.keep_checkpoints = change.keep_checkpoints;
  cfg.stop_after_steps = change.stop_after_steps;
  cfg.profile = change.profile;
  cfg.init.clear();  // the checkpoint below replaces whatever the run started from
  auto tr = std::make_unique<Trainer>(ctx, cfg, plugins);
  const SafeTensors& model = on_disk.checkpoint;
  nlohmann::json meta = checkpoint_metadata(model);
  if (meta.is_null() || !meta.contains("step") || !meta["step"].is_number_integer() ||
      meta["step"].get<int64_t>() != t.at("step").get<int64_t>())
    throw Error(ckpt_path + " and " + state_path + " are from different steps (interrupted while saving?)");
  load_network_state(*tr->net_, model, {"aux."});
  std::vector<Parameter*> params = tr->net_->parameters();
  if (tr->aux_) {
    if (load_named_tensors(tr->aux_->state(), model) != int(tr->aux_->state().size()))
      throw Error(ckpt_path + ": the auxiliary module's aux.* tensors are missing or incomplete");
    params.insert(params.end(), tr->aux_->parameters().begin(), tr->aux_->parameters().end());
  }
  for (Parameter* p : params) p->momentum.upload(state.get_f32(p->name + ".momentum", {p->value.numel()}));
  Impl& s = *tr->impl_;
  s.loss_sum.upload(state.get_f32("train.loss_sum", {1}));
  s.correct.upload_u32({uint32_t(state.get_i64("train.correct").at(0))});
  s.aux_loss_sum.upload(state.get_f32("train.aux_loss_sum", {1}));
  s.aux_correct.upload_u32({uint32_t(state.get_i64("train.aux_correct").at(0))});
  s.epoch = t.at("epoch");
  s.position = t.at("position");
  s.step = t.at("step");
  s.train_seconds = t.at("train_seconds");
  s.train_images = t.at("train_images");
  s.log_loss_base = t.at("log_loss_base");
  s.log_correct_base = t.at("log_correct_base");
  s.log_position_base = t.at("log_position_base");
  if (s.position > tr->steps_per_epoch())
    throw Error(state_path + ": position " + std::to_string(s.position) + " is past the epoch's " +
                std::to_string(tr->steps_per_epoch()) + " steps (another --data-dir or --train-limit?)");
  // Drop metrics recorded after the checkpoint: the resumed run writes them again.
  std::ifstream in(dir + "/metrics.jsonl");
  std::string line, kept;
  while (std::getline(in, line)) {
    auto r = nlohmann::json::parse(line, nullptr, false);
    const bool before = !r.is_discarded() && r.is_object() &&
                        (!r.contains("step") || (r["step"].is_number() && r["step"].get<double>() <= double(s.step)));
    if (before) kept += line + "\n";
  }
  write_file_durably(dir + "/metrics.jsonl", kept);
  return tr;
}

// ---- the loop ------------------------------------------------------------------------
TrainSummary Trainer::run() {
  Impl& s = *impl_;
  if (cfg_.out.empty()) throw Error("--out RUN_DIR is required");
  std::error_code ec;
  fs::create_directories(cfg_.out, ec);
  if (ec || !fs::is_directory(cfg_.out)) throw Error("--out " + cfg_.out + ": cannot create directory");
  if (!s.train_set.class_names.empty())  // label i is classes.json[i]
    write_file_durably(cfg_.out + "/classes.json", nlohmann::json(s.train_set.class_names).dump(1) + "\n");
  std::ofstream metrics(cfg_.out + "/metrics.jsonl", std::ios::app);
  if (!metrics) throw Error("cannot write " + cfg_.out + "/metrics.jsonl");

  const bool tty = isatty(fileno(stderr));
  const int64_t steps_per_epoch = s.train_loader->batches_per_epoch();
  float* lr_slot = static_cast<float*>(s.step_params.view().mapped);
  float* loss_sum = static_cast<float*>(s.loss_sum.view().mapped);
  uint32_t* correct = static_cast<uint32_t*>(s.correct.view().mapped);
  float* aux_loss_sum = static_cast<float*>(s.aux_loss_sum.view().mapped);
  uint32_t* aux_correct = static_cast<uint32_t*>(s.aux_correct.view().mapped);
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
  int steps_this_process = 0;
  g_stop = false;
  auto interrupt = [&] {
    save_run_state(cfg_.out, cfg_, *net_, aux_.get(), s);
    if (tty) std::fprintf(stderr, "\n");
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
    auto epoch_start = Clock::now(), log_start = epoch_start;
    wait = DataWait{};
    const int epoch_start_position = s.position;
    while (true) {
      if (hooks_ && !hooks_->before_step(*this)) return interrupt();  // may also pause or reconfigure
      auto t0 = Clock::now();
      if (!s.train_loader->next(batch)) break;
      const double waited = seconds_since(t0);  // time the device waited for the data pipeline
      fill_host_batch(s.host_x, s.host_y, batch);
      const float lr = scheduled_lr(cfg_, s.step, steps_per_epoch);
      lr_slot[0] = lr;
      const float loss_before = *loss_sum, aux_loss_before = *aux_loss_sum;
      const uint32_t correct_before = *correct, aux_correct_before = *aux_correct;
      s.train_step->run();
      // The divergence guard: the loss accumulators are host-visible and this replay has
      // completed, so the check costs no extra synchronization.
      if (!std::isfinite(*loss_sum) || (aux_ && !std::isfinite(*aux_loss_sum))) {
        const bool lp = !std::isfinite(*loss_sum);
        const double step_loss = lp ? (*loss_sum - loss_before) / batch.size : (*aux_loss_sum - aux_loss_before) / batch.size;
        const int64_t last = committed_step(cfg_.out);
        if (tty) std::fprintf(stderr, "\n");
        throw Error("training diverged at step " + std::to_string(s.step + 1) + " (epoch " + std::to_string(s.epoch + 1) +
                    ", lr " + num(lr) + "): " + (lp ? "loss " : "aux head loss ") + num(step_loss) + "; " +
                    (last >= 0 ? "the last good checkpoint, step " + std::to_string(last) + ", is " + cfg_.out + "/" +
                                     kCheckpointFile + " (continue with: vkqat train --resume " + cfg_.out + ")"
                               : std::string("no checkpoint was saved yet")) +
                    "; a lower --lr or more --warmup-epochs avoids this");
      }
      s.train_seconds += seconds_since(t0);
      wait.add(waited, seconds_since(t0));
      s.train_images += batch.size;
      ++s.step, ++s.position, ++steps_this_process;
      if (hooks_) {
        StepReport r;
        r.step = s.step, r.epoch = s.epoch + 1, r.position = s.position, r.steps_per_epoch = steps_per_epoch;
        r.lr = lr;
        r.loss = (*loss_sum - loss_before) / batch.size, r.acc = double(*correct - correct_before) / batch.size;
        r.has_aux = aux_ != nullptr;
        r.aux_loss = (*aux_loss_sum - aux_loss_before) / batch.size;
        r.aux_acc = double(*aux_correct - aux_correct_before) / batch.size;
        r.step_seconds = seconds_since(t0);
        r.images_per_s = batch.size / std::max(1e-9, r.step_seconds);
        hooks_->after_step(*this, r);
      }

      if (cfg_.profile && steps_this_process == 3) {
        const StepProfile p = step_profile();
        double total = 0;
        for (const DispatchTiming& t : p.timings) total += t.ms;
        std::fprintf(stderr, "\nGPU time of training step %lld: %.2f ms (%zu commands, %zu timed%s, %zu barriers)\n",
                     (long long)s.step, total, p.commands, p.timings.size(),
                     p.complete ? "" : ", timestamps incomplete or out of order", s.train_step->barrier_count());
        for (const LabelTime& k : group_by_label(p.timings))
          std::fprintf(stderr, "  %-36s %8.3f ms %5.1f%%  x%d\n", k.label.c_str(), k.ms, 100 * k.ms / total, k.commands);
      }
      // Records fall on fixed positions of the epoch, whatever the process history.
      const bool log_now = s.position % cfg_.log_every == 0 || s.position == steps_per_epoch;
      if (log_now || tty) {
        const double n = double(s.position - s.log_position_base) * cfg_.batch;
        const double loss = (*loss_sum - s.log_loss_base) / n, acc = (*correct - s.log_correct_base) / n;
        const double ips = double(s.position - std::max(s.log_position_base, epoch_start_position)) * cfg_.batch /
                           seconds_since(log_start);
        if (log_now) {
          nlohmann::json rec = {{"type", "step"}, {"epoch", s.epoch + 1}, {"step", s.step}, {"lr", lr},
                                {"loss", loss}, {"acc", acc}, {"images_per_s", ips},
                                {"data_wait", DataWait::frac(wait.interval_wait, wait.interval_total)}};
          wait.interval_wait = wait.interval_total = 0;
          if (aux_) {  // epoch-running means of the aux head (its interval bases are not kept)
            const double m = double(s.position) * cfg_.batch;
            rec["aux_loss_epoch"] = *aux_loss_sum / m;
            rec["aux_acc_epoch"] = *aux_correct / m;
          }
          metrics << rec.dump() << "\n";
          metrics.flush();
          if (!metrics) throw Error("cannot write " + cfg_.out + "/metrics.jsonl (disk full?)");
          s.log_loss_base = *loss_sum, s.log_correct_base = *correct, s.log_position_base = s.position;
          log_start = Clock::now();
        }
        if (tty) {
          double done = double(s.position) / steps_per_epoch;
          double eta = seconds_since(epoch_start) / std::max(1e-9, done) * (1 - done);
          std::fprintf(stderr, "\repoch %d/%d  step %d/%lld  loss %.4f  acc %5.1f%%  %6.0f img/s  data wait %3.0f%%  ETA %s   ",
                       s.epoch + 1, cfg_.epochs, s.position, (long long)steps_per_epoch, *loss_sum / (s.position * cfg_.batch),
                       100.0 * *correct / (s.position * cfg_.batch), s.train_images / s.train_seconds,
                       100.0 * DataWait::frac(wait.epoch_wait, wait.epoch_total), format_eta(eta).c_str());
        }
      }
      if (g_stop || (cfg_.stop_after_steps > 0 && steps_this_process >= cfg_.stop_after_steps)) return interrupt();
    }
    const double train_loss = *loss_sum / double(steps_per_epoch * cfg_.batch);
    const double train_acc = *correct / double(steps_per_epoch * cfg_.batch);
    last_eval = evaluate();
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
    std::fprintf(stderr, "epoch %d/%d: train loss %.4f acc %.2f%% | test loss %.4f acc %.2f%%", s.epoch + 1, cfg_.epochs,
                 train_loss, 100 * train_acc, last_eval.loss, 100 * last_eval.acc);
    if (last_eval.has_aux) std::fprintf(stderr, " | aux head test acc %.2f%%", 100 * last_eval.aux_acc);
    std::fprintf(stderr, " | %.0f img/s\n", s.train_images / s.train_seconds);
    ++s.epoch, s.position = 0;
    save_run_state(cfg_.out, cfg_, *net_, aux_.get(), s);  // a finished epoch is never lost
  }
  if (last_eval.images == 0) last_eval = evaluate();  // resumed a run that had already finished

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
  write_file_durably(cfg_.out + "/summary.json", summary.json.dump(2) + "\n");
  return summary;
}

// ---- vkqat eval ----------------------------------------------------------------------
EvalResult evaluate_checkpoint(Context& ctx, const EvalRequest& req, ModelConfig* used, const QuantPlugins& plugins) {
  SafeTensors st = read_safetensors(req.checkpoint);
  nlohmann::json meta = checkpoint_metadata(st);
  // Folder and cache data are transformed as in training (the checkpoint's data options).
  DataOptions data_opt;
  if (!meta.is_null() && meta.contains("data_options")) data_opt = DataOptions::from_json(meta["data_options"]);
  data_opt.val_split = req.data == "folder" ? data_opt.val_split : 0;
  if (req.data != "folder" && req.data != "cache") {  // only the normalization carries over
    DataOptions keep;
    keep.mean = data_opt.mean, keep.std = data_opt.std;
    data_opt = keep;
  }
  if (req.workers > 0) data_opt.workers = req.workers;
  Dataset test = load_test_split(req.data, req.data_dir, data_opt);
  if (req.limit > 0) test = first_n(test, req.limit);
  if (!meta.is_null() && meta.contains("classes") && !test.class_names.empty() &&
      meta["classes"].get<std::vector<std::string>>() != test.class_names)
    throw Error(req.checkpoint + " was trained on other classes than " + req.data_dir + " holds (see its metadata)");
  ModelConfig mc;
  if (!meta.is_null() && meta.contains("model")) {
    mc = ModelConfig::from_json(meta["model"]);
  } else if (req.model.empty()) {
    throw Error(req.checkpoint + " has no vkqat metadata (a PyTorch state_dict?): pass --model and --width");
  }
  if (!req.model.empty()) mc.name = req.model;
  if (req.width > 0) mc.width = req.width;
  if (mc.in_channels != test.channels || mc.height != test.height || mc.width_px != test.width ||
      mc.classes != test.classes) {
    if (!meta.is_null())
      throw Error(req.checkpoint + " was trained on " + std::to_string(mc.in_channels) + "x" + std::to_string(mc.height) +
                  "x" + std::to_string(mc.width_px) + " images with " + std::to_string(mc.classes) + " classes; --data " +
                  req.data + " has " + std::to_string(test.channels) + "x" + std::to_string(test.height) + "x" +
                  std::to_string(test.width) + " with " + std::to_string(test.classes));
    mc.in_channels = test.channels, mc.height = test.height, mc.width_px = test.width, mc.classes = test.classes;
  }
  auto net = build_network(ctx, mc, std::min(req.batch, std::max(1, test.n)));
  const nlohmann::json quant = meta.is_null() ? nlohmann::json() : meta.value("quant", nlohmann::json());
  if (!quant.is_null()) {
    if (!plugins.policy) throw Error(req.checkpoint + " is quantized: evaluating it needs the quantization module");
    net->apply_quant_policy(*plugins.policy(quant));
  }
  load_network_state(*net, st, {"aux."});
  // The auxiliary head is evaluated too when the checkpoint carries it.
  std::unique_ptr<AuxiliaryHead> aux;
  if (!meta.is_null() && meta.value("aux", false) && plugins.aux && st.has("aux.fc.weight")) {
    aux = plugins.aux(ctx, *net);
    if (load_named_tensors(aux->state(), st) != int(aux->state().size()))
      throw Error(req.checkpoint + ": incomplete aux.* tensors");
  }
  if (used) *used = mc;
  Evaluator ev(ctx, *net, test, 0, aux.get());
  return ev.run();
}

}  // namespace vkqat::nn

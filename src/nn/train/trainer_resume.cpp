// The run-state files: checkpoint + trainer state saved between steps, and --resume.
#include <filesystem>
#include <fstream>

#include "backend/error.h"
#include "nn/train/checkpoint.h"
#include "nn/train/run_state.h"
#include "nn/train/trainer_internal.h"

namespace vkqat::nn {
namespace fs = std::filesystem;
using trainer_detail::absolute_path;

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
void save_run_state(const std::string& dir, const TrainConfig& cfg, Network& net, AuxiliaryHead* aux,
                           Trainer::Impl& s) {
  if (s.rank != 0) return;  // data-parallel: rank 0 writes the run directory
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
  if (change.bucket_mb >= 0) cfg.bucket_mb = change.bucket_mb;
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
  tr->net_->set_step(s.step);  // the dropout masks continue where the run stopped
  s.train_seconds = t.at("train_seconds");
  s.train_images = t.at("train_images");
  s.log_loss_base = t.at("log_loss_base");
  s.log_correct_base = t.at("log_correct_base");
  s.log_position_base = t.at("log_position_base");
  if (s.position > tr->steps_per_epoch())
    throw Error(state_path + ": position " + std::to_string(s.position) + " is past the epoch's " +
                std::to_string(tr->steps_per_epoch()) + " steps (another --data-dir or --train-limit?)");
  if (s.rank != 0) return tr;  // data-parallel: rank 0 writes the run directory
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

}  // namespace vkqat::nn

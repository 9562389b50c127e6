// `vkqat train`, `vkqat eval`, `vkqat inspect`: the training contract of DESIGN.md.
#include <nlohmann/json.hpp>

#include <csignal>
#include <cstdio>
#include <iostream>

#include "backend/context.h"
#include "backend/error.h"
#include "commands.h"
#include "nn/safetensors.h"
#include "nn/train/checkpoint.h"
#include "nn/train/trainer.h"
#include "quant/policy.h"

namespace vkqat::cli {
namespace {

struct TrainArgs {
  nn::TrainConfig cfg;
  quant::QuantConfig quant;
  std::string resume, bits_config;
  int device = -1;
  bool epochs_given = false;  // with --resume, only an explicit --epochs changes the run's
};

void on_sigint(int) { nn::Trainer::request_stop(); }

int run_train(TrainArgs a) {
  if (a.resume.empty() && a.cfg.out.empty()) throw Error("--out RUN_DIR is required (or --resume RUN_DIR)");
  a.quant.wbits = a.cfg.wbits;
  a.quant.abits = a.cfg.abits;
  if (!a.bits_config.empty()) {
    a.quant.bits_config = quant::load_bits_config(a.bits_config);
    a.quant.bits_config_source = "--bits-config " + a.bits_config;
  }
  a.quant.validate();
  if (a.quant.any() || !a.bits_config.empty()) a.cfg.quant = a.quant.to_json();
  if (!(a.cfg.aux_weight >= 0)) throw Error("--aux-weight must be >= 0");
  ContextOptions co;
  co.device = a.device;
  Context ctx(co);
  const nn::QuantPlugins plugins = quant::quant_plugins();
  std::unique_ptr<nn::Trainer> trainer = a.resume.empty() ? std::make_unique<nn::Trainer>(ctx, a.cfg, plugins)
                                                          : nn::Trainer::resume(ctx, a.resume, a.epochs_given ? a.cfg.epochs : 0, plugins);
  std::signal(SIGINT, on_sigint);  // first Ctrl-C: checkpoint and stop cleanly
  std::fprintf(stderr, "training %s (width %d, %llu parameters) on %s, device %s\n",
               trainer->config().model.name.c_str(), trainer->config().model.width,
               (unsigned long long)trainer->network().parameter_count(), trainer->config().data.c_str(),
               ctx.info().name.c_str());
  nn::TrainSummary s = trainer->run();
  std::signal(SIGINT, SIG_DFL);
  if (s.interrupted) return 130;
  std::printf("test_acc %.4f", s.test_acc);
  if (s.eval.has_aux) std::printf("  aux_test_acc %.4f", s.eval.aux_acc);
  std::printf("  test_loss %.4f  train %.0f images/s  %.1f s  -> %s/summary.json\n", s.test_loss,
              s.train_images_per_s, s.seconds, trainer->config().out.c_str());
  return 0;
}

int run_eval(const nn::EvalRequest& req, int device, bool json) {
  ContextOptions co;
  co.device = device;
  Context ctx(co);
  nn::ModelConfig mc;
  nn::EvalResult r = nn::evaluate_checkpoint(ctx, req, &mc, quant::quant_plugins());
  if (json) {
    std::cout << nlohmann::json{{"test_acc", r.acc},
                                {"test_loss", r.loss},
                                {"aux_test_acc", r.has_aux ? nlohmann::json(r.aux_acc) : nlohmann::json()},
                                {"images", r.images},
                                {"checkpoint", req.checkpoint},
                                {"model", mc.to_json()},
                                {"device", ctx.info().name}}
                     .dump(2)
              << "\n";
  } else {
    std::printf("%s: test_acc %.4f  test_loss %.4f", req.checkpoint.c_str(), r.acc, r.loss);
    if (r.has_aux) std::printf("  aux_test_acc %.4f", r.aux_acc);
    std::printf("  (%d images, %s)\n", r.images, mc.name.c_str());
  }
  return 0;
}

int run_inspect(const std::string& path, bool json) {
  nn::SafeTensors st = nn::read_safetensors(path);
  if (json) {
    nlohmann::json out = {{"file", path}, {"metadata", st.metadata}, {"tensors", nlohmann::json::object()}};
    for (const auto& [name, t] : st.tensors) out["tensors"][name] = {{"dtype", t.dtype}, {"shape", t.shape}};
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  int64_t total = 0;
  for (const auto& [name, t] : st.tensors) {
    std::string shape;
    for (size_t i = 0; i < t.shape.size(); ++i) shape += (i ? ", " : "") + std::to_string(t.shape[i]);
    std::printf("%-48s %-4s [%s]\n", name.c_str(), t.dtype.c_str(), shape.c_str());
    total += t.numel();
  }
  std::printf("%zu tensors, %lld values\n", st.tensors.size(), (long long)total);
  for (const auto& [k, v] : st.metadata) std::printf("metadata %s: %s\n", k.c_str(), v.c_str());
  return 0;
}

// The deployable low-precision checkpoint: everything but the auxiliary module.
int run_export_lp(const std::string& in, const std::string& out) {
  nn::SafeTensors st = nn::read_safetensors(in);
  size_t dropped = 0;
  for (auto it = st.tensors.begin(); it != st.tensors.end();)
    if (it->first.rfind("aux.", 0) == 0)
      it = st.tensors.erase(it), ++dropped;
    else
      ++it;
  nlohmann::json meta = nn::checkpoint_metadata(st);
  if (!meta.is_null()) {
    meta["aux"] = false;
    st.metadata["vkqat"] = meta.dump();
  }
  nn::write_safetensors(out, st);
  std::printf("%s: %zu tensors (%zu aux.* tensors dropped)\n", out.c_str(), st.tensors.size(), dropped);
  return 0;
}

}  // namespace

void add_training_commands(CLI::App& app, Actions& actions) {
  auto a = std::make_shared<TrainArgs>();
  auto* t = app.add_subcommand("train", "train a network (writes RUN_DIR/{metrics.jsonl,checkpoint.safetensors,summary.json})");
  t->add_option("--data", a->cfg.data, "dataset: fashion-mnist | mnist | cifar10")->capture_default_str();
  t->add_option("--data-dir", a->cfg.data_dir, "directory of the dataset files (default: Debian's location)");
  t->add_option("--model", a->cfg.model.name, "resnet20 | resnet32 | resnet56 | plain-cnn")->capture_default_str();
  t->add_option("--width", a->cfg.model.width, "channels of the first stage (16 = standard)")->capture_default_str();
  t->add_option("--epochs", a->cfg.epochs, "epochs")->capture_default_str();
  t->add_option("--batch-size", a->cfg.batch, "batch size")->capture_default_str();
  t->add_option("--lr", a->cfg.lr, "peak learning rate (cosine schedule)")->capture_default_str();
  t->add_option("--momentum", a->cfg.momentum, "SGD momentum")->capture_default_str();
  t->add_option("--wd", a->cfg.weight_decay, "weight decay (not on BN parameters and biases)")->capture_default_str();
  t->add_option("--warmup-epochs", a->cfg.warmup_epochs, "linear learning-rate warm-up")->capture_default_str();
  t->add_option("--seed", a->cfg.seed, "random seed (init, data order, augmentation)")->capture_default_str();
  t->add_option("--wbits", a->cfg.wbits, "weight bits (32 = full precision)")->capture_default_str();
  t->add_option("--abits", a->cfg.abits, "activation bits (32 = full precision)")->capture_default_str();
  t->add_option("--quantizer", a->quant.quantizer, "cgpact | dorefa-pact | dorefa | lsq | minmax")->capture_default_str();
  t->add_option("--edge-bits", a->quant.edge_bits, "weight bits of the first conv and last FC")->capture_default_str();
  t->add_option("--bits-config", a->bits_config, "JSON file of per-layer bits: {\"layer1.0.conv1\": {\"wbits\": 2}}");
  t->add_flag("--sat", a->quant.sat, "scale-adjusted training: last FC weights rescaled to n_out Var = 1");
  t->add_flag("--sat-conv", a->quant.sat_conv, "SAT's rescale of every conv weight (fan_out Var = 1)");
  t->add_flag("--aux", a->cfg.aux, "full-precision auxiliary module (training only)");
  t->add_option("--aux-weight", a->cfg.aux_weight, "lambda: loss = CE(LP) + lambda CE(aux)")->capture_default_str();
  t->add_option("--init", a->cfg.init, "initialise weights from a checkpoint");
  t->add_option("--resume", a->resume, "continue the run in RUN_DIR from its last checkpoint");
  t->add_option("--out", a->cfg.out, "run directory");
  t->add_option("--device", a->device, "Vulkan device index (see `vkqat devices`)");
  t->add_option("--train-limit", a->cfg.train_limit, "use only the first K training images");
  t->add_option("--test-limit", a->cfg.test_limit, "use only the first K test images");
  t->add_option("--log-every", a->cfg.log_every, "steps between metrics.jsonl records")->capture_default_str();
  t->add_option("--stop-after-steps", a->cfg.stop_after_steps, "checkpoint and stop after N steps (as if interrupted)");
  t->add_flag("--profile", a->cfg.profile, "print the GPU time of each dispatch of one step");
  t->callback([&actions, a, t] {
    a->epochs_given = t->count("--epochs") > 0;
    if (a->cfg.model.width < 1) throw CLI::ValidationError("--width", "must be >= 1");
    actions.push_back([a] { return run_train(*a); });
  });

  auto e = std::make_shared<nn::EvalRequest>();
  auto edev = std::make_shared<int>(-1);
  auto ejson = std::make_shared<bool>(false);
  auto* ev = app.add_subcommand("eval", "test accuracy and loss of a checkpoint (vkqat or PyTorch safetensors)");
  ev->add_option("--checkpoint", e->checkpoint, "safetensors file")->required();
  ev->add_option("--data", e->data, "dataset")->capture_default_str();
  ev->add_option("--data-dir", e->data_dir, "dataset directory");
  ev->add_option("--model", e->model, "model, for files without vkqat metadata");
  ev->add_option("--width", e->width, "width, for files without vkqat metadata");
  ev->add_option("--batch-size", e->batch, "batch size")->capture_default_str();
  ev->add_option("--limit", e->limit, "only the first K test images");
  ev->add_option("--device", *edev, "Vulkan device index");
  ev->add_flag("--json", *ejson, "machine-readable output");
  ev->callback([&actions, e, edev, ejson] { actions.push_back([=] { return run_eval(*e, *edev, *ejson); }); });

  auto lp_in = std::make_shared<std::string>(), lp_out = std::make_shared<std::string>();
  auto* ex = app.add_subcommand("export-lp", "write the deployable low-precision checkpoint (auxiliary module dropped)");
  ex->add_option("--checkpoint", *lp_in, "trained checkpoint")->required();
  ex->add_option("--out", *lp_out, "output safetensors file")->required();
  ex->callback([&actions, lp_in, lp_out] { actions.push_back([=] { return run_export_lp(*lp_in, *lp_out); }); });

  auto path = std::make_shared<std::string>();
  auto ijson = std::make_shared<bool>(false);
  auto* in = app.add_subcommand("inspect", "list the tensors and metadata of a safetensors checkpoint");
  in->add_option("file", *path, "safetensors file")->required();
  in->add_flag("--json", *ijson, "machine-readable output");
  in->callback([&actions, path, ijson] { actions.push_back([=] { return run_inspect(*path, *ijson); }); });
}

}  // namespace vkqat::cli

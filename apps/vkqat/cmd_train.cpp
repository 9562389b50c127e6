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

namespace vkqat::cli {
namespace {

struct TrainArgs {
  nn::TrainConfig cfg;
  std::string resume, quantizer = "none";
  int device = -1;
  bool sat = false, aux = false;
  float aux_weight = 1.f;
};

void on_sigint(int) { nn::Trainer::request_stop(); }

int run_train(TrainArgs a) {
  if (a.resume.empty() && a.cfg.out.empty()) throw Error("--out RUN_DIR is required (or --resume RUN_DIR)");
  if (a.sat || a.aux || a.quantizer != "none")
    throw Error("--sat, --aux and --quantizer need the quantization module, which this build does not have yet");
  ContextOptions co;
  co.device = a.device;
  Context ctx(co);
  std::unique_ptr<nn::Trainer> trainer =
      a.resume.empty() ? std::make_unique<nn::Trainer>(ctx, a.cfg) : nn::Trainer::resume(ctx, a.resume, a.cfg.epochs);
  std::signal(SIGINT, on_sigint);  // first Ctrl-C: checkpoint and stop cleanly
  std::fprintf(stderr, "training %s (width %d, %llu parameters) on %s, device %s\n",
               trainer->config().model.name.c_str(), trainer->config().model.width,
               (unsigned long long)trainer->network().parameter_count(), trainer->config().data.c_str(),
               ctx.info().name.c_str());
  nn::TrainSummary s = trainer->run();
  std::signal(SIGINT, SIG_DFL);
  if (s.interrupted) return 130;
  std::printf("test_acc %.4f  test_loss %.4f  train %.0f images/s  %.1f s  -> %s/summary.json\n", s.test_acc,
              s.test_loss, s.train_images_per_s, s.seconds, trainer->config().out.c_str());
  return 0;
}

int run_eval(const nn::EvalRequest& req, int device, bool json) {
  ContextOptions co;
  co.device = device;
  Context ctx(co);
  nn::ModelConfig mc;
  nn::EvalResult r = nn::evaluate_checkpoint(ctx, req, &mc);
  if (json) {
    std::cout << nlohmann::json{{"test_acc", r.acc}, {"test_loss", r.loss}, {"images", r.images},
                                {"checkpoint", req.checkpoint}, {"model", mc.to_json()}, {"device", ctx.info().name}}
                     .dump(2)
              << "\n";
  } else {
    std::printf("%s: test_acc %.4f  test_loss %.4f  (%d images, %s)\n", req.checkpoint.c_str(), r.acc, r.loss,
                r.images, mc.name.c_str());
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
  t->add_option("--quantizer", a->quantizer, "quantizer");
  t->add_flag("--sat", a->sat, "scale-adjusted training");
  t->add_flag("--aux", a->aux, "full-precision auxiliary module");
  t->add_option("--aux-weight", a->aux_weight, "lambda of the auxiliary loss");
  t->add_option("--init", a->cfg.init, "initialise weights from a checkpoint");
  t->add_option("--resume", a->resume, "continue the run in RUN_DIR from its last checkpoint");
  t->add_option("--out", a->cfg.out, "run directory");
  t->add_option("--device", a->device, "Vulkan device index (see `vkqat devices`)");
  t->add_option("--train-limit", a->cfg.train_limit, "use only the first K training images");
  t->add_option("--test-limit", a->cfg.test_limit, "use only the first K test images");
  t->add_option("--log-every", a->cfg.log_every, "steps between metrics.jsonl records")->capture_default_str();
  t->add_option("--stop-after-steps", a->cfg.stop_after_steps, "checkpoint and stop after N steps (as if interrupted)");
  t->add_flag("--profile", a->cfg.profile, "print the GPU time of each dispatch of one step");
  t->callback([&actions, a] {
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

  auto path = std::make_shared<std::string>();
  auto ijson = std::make_shared<bool>(false);
  auto* in = app.add_subcommand("inspect", "list the tensors and metadata of a safetensors checkpoint");
  in->add_option("file", *path, "safetensors file")->required();
  in->add_flag("--json", *ijson, "machine-readable output");
  in->callback([&actions, path, ijson] { actions.push_back([=] { return run_inspect(*path, *ijson); }); });
}

}  // namespace vkqat::cli

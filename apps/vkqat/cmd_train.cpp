// `vkqat train`, `vkqat eval`, `vkqat inspect`: the training contract of DESIGN.md.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "backend/context.h"
#include "backend/error.h"
#include "commands.h"
#include "nn/model/model_builders.h"
#include "nn/safetensors.h"
#include "nn/train/checkpoint.h"
#include "nn/train/distributed.h"
#include "nn/train/trainer.h"
#include "quant/policy.h"
#include "quant/stats_file.h"
#include "train_options.h"

namespace vkqat::cli {
namespace {

void on_stop_signal(int) { nn::Trainer::request_stop(); }

// `--out` naming the input file would replace it before the user can compare (and a
// failed write would lose it): refused.
void check_not_same_file(const std::string& in, const std::string& out) {
  std::error_code ec;
  if (std::filesystem::equivalent(in, out, ec) ||
      std::filesystem::weakly_canonical(in, ec) == std::filesystem::weakly_canonical(out, ec))
    throw Error("--out " + out + " is the --checkpoint file itself; write to another path");
}

int train_process(TrainArgs a) {
  finish_train_args(a);
  const int rank = nn::dist::rank(), ranks = nn::dist::size();
  ContextOptions co;
  co.device = a.device;
  // One Vulkan device per rank on a host: local rank modulo the devices, unless --device or
  // VKQAT_DEVICE names one.
  if (nn::dist::active() && co.device < 0 && !std::getenv("VKQAT_DEVICE"))
    co.device = nn::dist::local_rank() % int(std::max<size_t>(1, enumerate_devices().size()));
  Context ctx(co);
  std::unique_ptr<nn::Trainer> trainer = make_trainer(ctx, a);
  std::unique_ptr<quant::StatsRecorder> stats;
  if (a.stats_every > 0 && rank == 0) {  // data-parallel: rank 0 writes the run directory
    const std::string& dir = trainer->config().out;
    if (!a.resume.empty()) quant::truncate_stats_file_after(dir, trainer->step());
    stats = std::make_unique<quant::StatsRecorder>(dir, a.stats_every);
    trainer->set_hooks(stats.get());
  }
  // Ctrl-C or SIGTERM (kill, a batch scheduler's time limit): finish the step, checkpoint, stop.
  std::signal(SIGINT, on_stop_signal);
  std::signal(SIGTERM, on_stop_signal);
  if (ranks > 1)
    std::fprintf(stderr, "%straining on device %d (%s), %d of the global batch of %d\n", nn::dist::rank_prefix().c_str(),
                 co.device, ctx.info().name.c_str(), trainer->config().batch / ranks, trainer->config().batch);
  if (rank == 0)
    std::fprintf(stderr, "training %s (%s, %llu parameters) on %s, device %s\n",
                 trainer->config().model.name.c_str(), nn::size_label(trainer->config().model).c_str(),
                 (unsigned long long)trainer->network().parameter_count(), trainer->config().data.c_str(),
                 ctx.info().name.c_str());
  nn::TrainSummary s = trainer->run();
  std::signal(SIGINT, SIG_DFL);
  std::signal(SIGTERM, SIG_DFL);
  if (s.interrupted) return 130;
  if (rank != 0) return 0;
  std::printf("test_acc %.4f", s.test_acc);
  if (s.eval.has_aux) std::printf("  aux_test_acc %.4f", s.eval.aux_acc);
  std::printf("  test_loss %.4f  train %.0f images/s  %.1f s  -> %s/summary.json\n", s.test_loss,
              s.train_images_per_s, s.seconds, trainer->config().out.c_str());
  return 0;
}

// Under mpirun every rank runs train_process; an error on any rank (a bad flag, a device
// that fails) stops them all (MPI_Abort), never leaving the others in a collective.
int run_train(const TrainArgs& a) {
  nn::dist::init_if_launched(nullptr, nullptr);
  if (!nn::dist::active()) return train_process(a);
  int code = 0;
  try {
    code = train_process(a);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vkqat train: %serror: %s\n", nn::dist::rank_prefix().c_str(), e.what());
    nn::dist::abort(1);
  }
  nn::dist::finalize();
  return code;
}

int run_eval(const nn::EvalRequest& req, int device, bool json) {
  ContextOptions co;
  co.device = device;
  Context ctx(co);
  nn::ModelConfig mc;
  nn::EvalResult r = nn::evaluate_checkpoint(ctx, req, &mc, quant::quant_plugins());
  // Class names: the checkpoint's (image folders, CIFAR-100 with its names file), else the label.
  std::vector<std::string> names;
  const nlohmann::json meta = nn::checkpoint_metadata(nn::read_safetensors(req.checkpoint));
  if (!meta.is_null() && meta.contains("classes") && meta["classes"].is_array())
    names = meta["classes"].get<std::vector<std::string>>();
  auto class_name = [&](size_t k) { return k < names.size() ? names[k] : std::to_string(k); };
  nlohmann::json per_class = nlohmann::json::array();
  for (size_t k = 0; k < r.class_total.size(); ++k)
    per_class.push_back({{"class", class_name(k)},
                         {"images", r.class_total[k]},
                         {"acc", r.class_total[k] ? nlohmann::json(double(r.class_correct[k]) / r.class_total[k]) : nlohmann::json()}});
  if (json) {
    std::cout << nlohmann::json{{"test_acc", r.acc},
                                {"test_loss", r.loss},
                                {"aux_test_acc", r.has_aux ? nlohmann::json(r.aux_acc) : nlohmann::json()},
                                {"images", r.images},
                                {"per_class", per_class},
                                {"checkpoint", req.checkpoint},
                                {"model", mc.to_json()},
                                {"device", ctx.info().name}}
                     .dump(2)
              << "\n";
  } else {
    std::printf("%s: test_acc %.4f  test_loss %.4f", req.checkpoint.c_str(), r.acc, r.loss);
    if (r.has_aux) std::printf("  aux_test_acc %.4f", r.aux_acc);
    std::printf("  (%d images, %s)\n", r.images, mc.name.c_str());
    for (const nlohmann::json& c : per_class)
      if (c["images"].get<int64_t>() > 0)
        std::printf("  %-24s %6.2f%%  (%lld images)\n", c["class"].get<std::string>().c_str(), 100 * c["acc"].get<double>(),
                    (long long)c["images"].get<int64_t>());
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
  check_not_same_file(in, out);
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
  add_train_options(t, *a);
  t->add_option("--stats-every", a->stats_every,
                "every N steps, write weight/activation/last-layer statistics to RUN_DIR/stats.cbor (for vkqat-viz --replay)");
  t->callback([&actions, a, t] {
    note_given(t, *a);
    actions.push_back([a] { return run_train(*a); });
  });

  auto e = std::make_shared<nn::EvalRequest>();
  auto edev = std::make_shared<int>(-1);
  auto ejson = std::make_shared<bool>(false);
  auto* ev = app.add_subcommand("eval", "test accuracy and loss of a checkpoint (vkqat or PyTorch safetensors)");
  ev->add_option("--checkpoint", e->checkpoint, "safetensors file")->required();
  ev->add_option("--data", e->data, "dataset (folder/cache: transformed as in training, from the checkpoint's metadata)")->capture_default_str();
  ev->add_option("--data-dir", e->data_dir, "dataset directory");
  ev->add_option("--model", e->model, "model, for files without vkqat metadata");
  ev->add_option("--width", e->width, "width, for files without vkqat metadata (resnet18/34/50: read from conv1.weight)")->check(CLI::PositiveNumber);
  ev->add_option("--width-mult", e->width_mult, "mobilenets, files without vkqat metadata (default: read from the tensors' shapes)")->check(CLI::Range(0.01, 16.0));
  ev->add_option("--stem", e->stem, "torchvision models, files without vkqat metadata: imagenet | cifar")->check(CLI::IsMember({"imagenet", "cifar"}));
  ev->add_option("--batch-size", e->batch, "batch size")->capture_default_str()->check(CLI::PositiveNumber);
  ev->add_option("--limit", e->limit, "only the first K test images")->check(CLI::NonNegativeNumber);
  ev->add_option("--workers", e->workers, "folder/cache data: decode threads (default: the checkpoint's)");
  ev->add_option("--device", *edev, "Vulkan device index")->check(CLI::NonNegativeNumber);
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

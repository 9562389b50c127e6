// `vkqat bench [--json] [--quick] [--only SECTIONS] [--depthwise-direct] [--device N] [--profile]`:
// throughput of the kernels on one device; --profile adds the occupancy of every dispatch of the
// training steps.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <iostream>
#include <unistd.h>

#include "backend/context.h"
#include "backend/error.h"
#include "commands.h"
#include "nn/bench.h"
#include "nn/data/data_bench.h"
#include "nn/model/network.h"
#include "nn/ops/batchnorm2d.h"
#include "nn/ops/conv2d.h"
#include "nn/train/trainer.h"
#include "quant/bench.h"
#include "quant/int_bench.h"
#include "quant/policy.h"

namespace vkqat::cli {
namespace {

struct BenchOptions {
  bool json = false, quick = false, profile = false;
  bool depthwise_direct = false;  // also time the former direct depthwise kernels
  std::string data_dir;           // data section: generate (or reuse) the JPEG folder here and keep it
  int device = -1;
  std::vector<std::string> only;  // section names; empty = all
};

// The model of a timed training step: ResNet-20 (width 16, batch 128, 28x28x1, 10 classes,
// the acceptance configuration) or, with `--only train`, torchvision's ResNet-18 (width 64),
// MobileNetV2 and MobileNetV1 (x1.0) at their full widths with the CIFAR stem on 32x32x3
// images, batch 8 (a ResNet-18 step costs about what the ResNet-20 b128 one does on lavapipe).
struct StepModel {
  std::string label;  // "resnet20 w16 b128"
  nn::ModelConfig model;
  int batch = 128;
};

StepModel resnet20_step() {
  StepModel s{"resnet20 w16 b128", {}, 128};
  s.model.in_channels = 1, s.model.height = s.model.width_px = 28, s.model.classes = 10;
  return s;
}

// width: the ResNet's first-stage channels; width_mult: the MobileNet's multiplier.
StepModel torchvision_step(const std::string& name, int width, double width_mult, int batch) {
  StepModel s;
  nn::ModelConfig& m = s.model;
  m.name = name, m.stem = "cifar", m.width = width, m.width_mult = width_mult;
  m.in_channels = 3, m.height = m.width_px = 32, m.classes = 10;
  s.batch = batch;
  char label[96];
  if (name.rfind("mobilenet", 0) == 0)
    std::snprintf(label, sizeof label, "%s x%g cifar-stem 3x32x32 b%d", name.c_str(), width_mult, batch);
  else
    std::snprintf(label, sizeof label, "%s w%d cifar-stem 3x32x32 b%d", name.c_str(), width, batch);
  s.label = label;
  return s;
}

// One whole training step on random data: full precision vs W4A4 CG-PACT + SAT + aux, the
// quantization overhead, and (ResNet-20) the two halves of that overhead (quantizers alone,
// the aux module alone).
struct TrainStepCase {
  TrainStepCase(Context& ctx, const StepModel& sm, bool quant, bool with_aux) {
    cfg.batch = sm.batch;
    cfg.model = sm.model;
    const nn::ModelConfig& m = cfg.model;
    net = nn::build_network(ctx, m, cfg.batch);
    net->init(0);
    const nn::QuantPlugins plugins = quant::quant_plugins();
    if (quant) {
      quant::QuantConfig q;
      q.wbits = q.abits = 4;
      q.sat = true;
      net->apply_quant_policy(*plugins.policy(q.to_json()));
    }
    if (with_aux) {
      aux = plugins.aux(ctx, *net);
      aux->init(0);
    }
    std::vector<float> x(size_t(net->input().numel()));
    std::vector<uint32_t> y(size_t(cfg.batch));
    for (size_t i = 0; i < x.size(); ++i) x[i] = float((i * 2654435761u) % 1000) / 500.f - 1.f;
    for (size_t i = 0; i < y.size(); ++i) y[i] = uint32_t(i % size_t(m.classes));
    net->input().upload(x);
    labels = nn::Tensor(ctx, {cfg.batch}, nn::DType::U32);
    params = nn::Tensor(ctx, {4}, nn::DType::F32, MemoryKind::Host);
    loss = nn::Tensor(ctx, {1}), aux_loss = nn::Tensor(ctx, {1});
    correct = nn::Tensor(ctx, {1}, nn::DType::U32), aux_correct = nn::Tensor(ctx, {1}, nn::DType::U32);
    labels.upload_u32(y);
    params.upload({0.01f, 0, 0, 0});
    rec = std::make_unique<Recording>(ctx);
    nn::record_training_step(*rec, *net, aux.get(), cfg,
                             {&labels, &params, &loss, &correct, &aux_loss, &aux_correct});
    rec->finish();
  }
  nn::TrainConfig cfg;
  std::unique_ptr<nn::Network> net;
  std::unique_ptr<nn::AuxiliaryHead> aux;
  nn::Tensor labels, params, loss, correct, aux_loss, aux_correct;
  std::unique_ptr<Recording> rec;
};

// torchvision: also time ResNet-18, MobileNetV2 and MobileNetV1 (FP32 and W4A4 CG-PACT +
// SAT + aux); `vkqat bench --only train` asks for them, the default bench leaves them out
// (its running time).
std::vector<nn::BenchRecord> bench_training_step(Context& ctx, bool quick, bool torchvision) {
  struct Case {
    std::string model, name;
    std::unique_ptr<TrainStepCase> step;
    size_t fp32;  // index of the same model's FP32 case: the ratio's denominator
    std::vector<double> ms;
  };
  std::vector<Case> cases;
  auto add = [&](const StepModel& sm, const char* name, bool quant, bool with_aux) {
    const bool first = cases.empty() || cases.back().model != sm.label;
    const size_t fp32 = first ? cases.size() : cases.back().fp32;
    cases.push_back({sm.label, name, std::make_unique<TrainStepCase>(ctx, sm, quant, with_aux), fp32, {}});
  };
  const StepModel r20 = resnet20_step();
  add(r20, "fp32", false, false);
  add(r20, "w4a4 cgpact+sat+aux", true, true);
  add(r20, "w4a4 cgpact+sat (no aux)", true, false);
  add(r20, "fp32+aux", false, true);
  if (torchvision)
    for (const StepModel& sm : {torchvision_step("resnet18", 64, 1.0, 8), torchvision_step("mobilenet-v2", 64, 1.0, 8),
                                torchvision_step("mobilenet-v1", 64, 1.0, 8)}) {
      add(sm, "fp32", false, false);
      add(sm, "w4a4 cgpact+sat+aux", true, true);
    }
  // Alternate the steps and take each one's median: a slow spell of a shared machine then
  // hits all of them, and the ratios stay honest.
  const int rounds = quick ? 3 : 7;
  for (Case& c : cases) c.step->rec->run();
  for (int i = 0; i < rounds; ++i)
    for (Case& c : cases) c.ms.push_back(nn::time_recording_ms(*c.step->rec, 0, 1));
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  std::vector<nn::BenchRecord> out;
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    nn::BenchRecord r;
    r.name = "train_step " + c.model + " " + c.name;
    r.ms = median(c.ms);
    r.images_per_s = c.step->cfg.batch * 1000.0 / r.ms;
    if (c.fp32 != i) {
      char ratio[64];
      std::snprintf(ratio, sizeof ratio, "x%.3f of fp32 (median of %d alternating runs)",
                    r.ms / median(cases[c.fp32].ms), rounds);
      r.variant = ratio;
    }
    out.push_back(r);
  }
  return out;
}

// The training loop itself (Trainer on Fashion-MNIST: data loading, staging, submits, fence
// waits, logging), each model under VKQAT_PIPELINE=sync and overlap: ms per step and the
// host's time blocked on step fences per step. The trainers alternate in rounds of a few
// steps (each round a run() stopped by --stop-after-steps) and each reports its median round.
std::vector<nn::BenchRecord> bench_training_loop(Context& ctx, bool quick) {
  const std::string data_dir = nn::default_data_dir("fashion-mnist");
  if (!std::filesystem::exists(data_dir + "/train-images-idx3-ubyte.gz")) {
    std::fprintf(stderr, "bench: train loop skipped: no Fashion-MNIST in %s (Debian package dataset-fashion-mnist)\n",
                 data_dir.c_str());
    return {};
  }
  const int rounds = quick ? 3 : 5, steps_per_round = quick ? 4 : 8;
  std::error_code ec;
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / ("vkqat-bench-loop-" + std::to_string(getpid()));
  struct Loop {
    std::string name;
    std::unique_ptr<nn::Trainer> trainer;
    std::vector<double> ms, wait_ms;
  };
  std::vector<Loop> loops;
  for (bool quant : {false, true})
    for (const char* pipeline : {"sync", "overlap"}) {
      nn::TrainConfig c;
      c.model.width = 16;
      c.batch = 128;
      c.epochs = 1000;  // never reached: rounds stop after steps_per_round
      c.train_limit = 128 * (rounds + 1) * steps_per_round + 128;  // no epoch end inside the bench
      c.test_limit = 128;
      c.log_every = 50;
      c.stop_after_steps = steps_per_round;
      c.pipeline = pipeline;
      if (quant) quant::use_cgpact_sat_aux(c);
      const std::string name = std::string(quant ? "w4a4 cgpact+sat+aux " : "fp32 ") + pipeline;
      c.out = (dir / name).string();
      std::replace(c.out.begin(), c.out.end(), ' ', '_');
      std::replace(c.out.begin(), c.out.end(), '+', '_');
      loops.push_back({name, std::make_unique<nn::Trainer>(ctx, c, quant::quant_plugins()), {}, {}});
    }
  for (int round = 0; round <= rounds; ++round)  // round 0 warms up (pipelines, the driver's lazy work)
    for (Loop& l : loops) {
      const nn::Trainer::PipelineStats before = l.trainer->pipeline_stats();
      l.trainer->run();
      const nn::Trainer::PipelineStats after = l.trainer->pipeline_stats();
      const double n = double(after.steps - before.steps);
      if (round > 0 && n > 0) {
        l.ms.push_back(1e3 * (after.step_seconds - before.step_seconds) / n);
        l.wait_ms.push_back(1e3 * (after.host_wait_seconds - before.host_wait_seconds) / n);
      }
    }
  std::filesystem::remove_all(dir, ec);
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0.0 : v[v.size() / 2];
  };
  std::vector<nn::BenchRecord> out;
  for (size_t i = 0; i < loops.size(); ++i) {
    nn::BenchRecord r;
    r.name = "train_loop resnet20 w16 b128 " + loops[i].name;
    r.ms = median(loops[i].ms);
    r.images_per_s = 128 * 1000.0 / std::max(1e-9, r.ms);
    r.host_wait_ms = median(loops[i].wait_ms);
    char note[160];
    if (i % 2 == 1)
      std::snprintf(note, sizeof note, "host wait %.2f ms/step; x%.3f of sync (medians of %d alternating rounds of %d)",
                    r.host_wait_ms, r.ms / std::max(1e-9, out.back().ms), rounds, steps_per_round);
    else
      std::snprintf(note, sizeof note, "host wait %.2f ms/step", r.host_wait_ms);
    r.variant = note;
    out.push_back(r);
  }
  return out;
}

// Every dispatch of one training step (FP32 and W4A4 CG-PACT + SAT + aux): kernel, the
// variant set, workgroups, invocations per workgroup, FLOPs (convolutions; other kernels
// report 0) and the bytes of the bound views (an upper bound on bytes moved). A dispatch
// that carries >= 1% of the step's FLOPs with fewer than 264 workgroups (two per SM of a
// 132-SM GPU) cannot fill a large GPU: counted in "starved". The same for dispatches that
// bind >= 1% of the step's bytes (memory-bound kernels, batch norm's reductions, which
// report no FLOPs): "starved_heavy_bytes_dispatches".
nlohmann::json profile_training_steps(Context& ctx) {
  const char* walk_env = std::getenv("VKQAT_BN_WALK");
  const std::string walk = walk_env && *walk_env ? walk_env : ctx.info().is_cpu() ? "contiguous" : "interleaved";
  const std::string variant = std::string("conv ") + nn::conv_variant_name(nn::conv_variant(ctx)) + ", bn " + walk +
                              " reduction " + nn::bn_reduction_setting();
  nlohmann::json out = nlohmann::json::array();
  for (bool quant : {false, true}) {
    TrainStepCase step(ctx, resnet20_step(), quant, quant);
    const auto& shapes = step.rec->dispatch_shapes();
    double total = 0, total_bytes = 0;
    for (const DispatchShape& d : shapes) total += d.flops, total_bytes += double(d.bytes_bound);
    nlohmann::json list = nlohmann::json::array();
    int starved = 0, starved_bytes = 0;
    for (const DispatchShape& d : shapes) {
      const bool heavy = total > 0 && d.flops >= 0.01 * total;
      if (heavy && d.workgroups() < 264) ++starved;
      if (double(d.bytes_bound) >= 0.01 * total_bytes && d.workgroups() < 264) ++starved_bytes;
      list.push_back({{"label", d.label},
                      {"kernel", d.kernel},
                      {"workgroups", d.workgroups()},
                      {"groups", {d.groups.x, d.groups.y, d.groups.z}},
                      {"invocations_per_workgroup", d.invocations_per_workgroup()},
                      {"flops", d.flops},
                      {"bytes_bound", d.bytes_bound}});
    }
    out.push_back({{"step", quant ? "resnet20 w16 b128 w4a4 cgpact+sat+aux" : "resnet20 w16 b128 fp32"},
                   {"device", ctx.info().name},
                   {"variant", variant},
                   {"dispatches", shapes.size()},
                   {"flops", total},
                   {"starved_heavy_dispatches", starved},
                   {"bytes_bound", total_bytes},
                   {"starved_heavy_bytes_dispatches", starved_bytes},
                   {"dispatch", list}});
  }
  return out;
}

int run_bench(const BenchOptions& o) {
  ContextOptions co;
  co.device = o.device;
  Context ctx(co);
  std::vector<nn::BenchRecord> records;
  using BenchFn = std::function<std::vector<nn::BenchRecord>(Context&, bool)>;
  auto asked = [&](const char* section) { return std::find(o.only.begin(), o.only.end(), section) != o.only.end(); };
  const bool torchvision_steps = asked("train");
  const std::vector<std::pair<std::string, BenchFn>> benches = {
      {"conv", nn::bench_conv2d},
      {"depthwise", [&o](Context& c, bool quick) { return nn::bench_conv2d_depthwise(c, quick, o.depthwise_direct); }},
      {"elementwise", nn::bench_elementwise},
      {"reduce", nn::bench_reductions},
      {"quant", quant::bench_quant},
      {"int", quant::bench_int},
      {"train",
       [torchvision_steps](Context& c, bool quick) {
         std::vector<nn::BenchRecord> r = bench_training_step(c, quick, torchvision_steps),
                                      loop = bench_training_loop(c, quick);
         r.insert(r.end(), loop.begin(), loop.end());
         return r;
       }},
      {"data", [&o](Context&, bool quick) { return nn::bench_data_pipeline(quick, o.data_dir); }}};
  for (const std::string& name : o.only)
    if (std::none_of(benches.begin(), benches.end(), [&](const auto& b) { return b.first == name; }))
      throw Error("--only " + name + ": unknown section (conv, depthwise, elementwise, reduce, quant, int, train, data)");
  for (auto& [name, fn] : benches) {
    if (!o.only.empty() && !asked(name.c_str())) continue;
    if (name == "train" && o.profile) continue;  // --profile records the steps without timing them
    auto r = fn(ctx, o.quick);
    records.insert(records.end(), r.begin(), r.end());
    if (!o.json)
      for (const auto& b : r) {
        if (b.images_per_s > 0)
          std::printf("%-52s %9.3f ms %9.1f img/s    %s\n", b.name.c_str(), b.ms, b.images_per_s, b.variant.c_str());
        else if (b.gflops > 0 && b.gbps > 0)
          std::printf("%-52s %9.3f ms %9.2f GFLOP/s %8.2f GB/s  %s\n", b.name.c_str(), b.ms, b.gflops, b.gbps,
                      b.variant.c_str());
        else if (b.gflops > 0)
          std::printf("%-52s %9.3f ms %9.2f GFLOP/s  %s\n", b.name.c_str(), b.ms, b.gflops, b.variant.c_str());
        else
          std::printf("%-52s %9.3f ms %9.2f GB/s     %s\n", b.name.c_str(), b.ms, b.gbps, b.variant.c_str());
        std::fflush(stdout);
      }
  }
  const bool profile = o.profile && (o.only.empty() || asked("train"));
  const nlohmann::json steps = profile ? profile_training_steps(ctx) : nlohmann::json();
  if (o.json) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& b : records) {
      nlohmann::json r = {{"name", b.name}, {"ms", b.ms}, {"variant", b.variant}, {"device", ctx.info().name}};
      if (b.gflops > 0) r["gflops"] = b.gflops;
      if (b.gbps > 0) r["gbps"] = b.gbps;
      if (b.images_per_s > 0) r["images_per_s"] = b.images_per_s;
      if (b.host_wait_ms >= 0) r["host_wait_ms_per_step"] = b.host_wait_ms;
      out.push_back(r);
    }
    // With --profile: {"records": [...], "train_step_dispatches": [...]}; without, the list.
    if (profile) out = {{"records", out}, {"train_step_dispatches", steps}};
    std::cout << out.dump(2) << "\n";
  } else if (profile) {
    for (const auto& s : steps) {
      std::printf("\n%s (%s): %zu dispatches, %.2f GFLOP; %d dispatches with >= 1%% of the FLOPs, %d with >= 1%% "
                  "of the bytes launch < 264 workgroups\n", s["step"].get<std::string>().c_str(),
                  s["variant"].get<std::string>().c_str(), size_t(s["dispatches"]), double(s["flops"]) * 1e-9,
                  int(s["starved_heavy_dispatches"]), int(s["starved_heavy_bytes_dispatches"]));
      for (const auto& d : s["dispatch"])
        std::printf("  %-44s %8llu wg x %4u inv  %9.3f GFLOP  %9.2f MB\n", d["label"].get<std::string>().c_str(),
                    (unsigned long long)d["workgroups"], unsigned(d["invocations_per_workgroup"]),
                    double(d["flops"]) * 1e-9, double(d["bytes_bound"]) * 1e-6);
    }
  }
  return 0;
}

}  // namespace

void add_bench_command(CLI::App& app, Actions& actions) {
  auto* cmd = app.add_subcommand("bench", "measure kernel throughput (GFLOP/s, GB/s) on the selected device");
  auto o = std::make_shared<BenchOptions>();
  cmd->add_flag("--json", o->json, "machine-readable output: a list of records");
  cmd->add_flag("--quick", o->quick, "only the main shapes");
  cmd->add_flag("--profile", o->profile,
                "with the train section: record the training steps (not timed) and list every dispatch "
                "(kernel, workgroups, invocations, FLOPs, bytes)");
  cmd->add_option("--data-dir", o->data_dir,
                  "data section: write the generated JPEG folder to DIR and keep it (reused when DIR/train exists), "
                  "e.g. for scripts/torchvision_data_bench.py");
  cmd->add_flag("--depthwise-direct", o->depthwise_direct,
                "depthwise section: also time the former direct kernels (VKQAT_DW_VARIANT=direct), alternating "
                "with the blocked ones");
  cmd->add_option("--device", o->device, "Vulkan device index (see `vkqat devices`)")->check(CLI::NonNegativeNumber);
  cmd->add_option("--only", o->only, "only these sections: conv, depthwise, elementwise, reduce, quant, int, train, data "
                  "(train named here adds ResNet-18, MobileNetV2 and MobileNetV1 training steps)")->delimiter(',');
  cmd->callback([&actions, o] { actions.push_back([o] { return run_bench(*o); }); });
}

}  // namespace vkqat::cli

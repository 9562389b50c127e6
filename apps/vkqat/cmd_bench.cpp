// `vkqat bench [--json] [--quick] [--only SECTIONS] [--device N] [--profile]`: throughput of the
// kernels on one device; --profile adds the occupancy of every dispatch of the training steps.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <iostream>

#include "backend/context.h"
#include "backend/error.h"
#include "commands.h"
#include "nn/bench.h"
#include "nn/data/data_bench.h"
#include "nn/model/network.h"
#include "nn/ops/conv2d.h"
#include "nn/train/trainer.h"
#include "quant/bench.h"
#include "quant/int_bench.h"
#include "quant/policy.h"

namespace vkqat::cli {
namespace {

struct BenchOptions {
  bool json = false, quick = false, profile = false;
  int device = -1;
  std::vector<std::string> only;  // section names; empty = all
};

// One whole training step of ResNet-20 (width 16, batch 128, 28x28x1, 10 classes) on
// random data: full precision vs W4A4 CG-PACT + SAT + aux, the quantization overhead, and
// the two halves of that overhead (quantizers alone, the aux module alone).
struct TrainStepCase {
  // graph: the same model from its description on GraphNetwork (nn/model/graph_network.h).
  TrainStepCase(Context& ctx, bool quant, bool with_aux, bool graph = false) {
    cfg.batch = 128;
    nn::ModelConfig& m = cfg.model;
    m.in_channels = 1, m.height = m.width_px = 28, m.classes = 10;
    net = graph ? nn::build_graph_network(ctx, m, cfg.batch) : nn::build_network(ctx, m, cfg.batch);
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
    for (size_t i = 0; i < y.size(); ++i) y[i] = uint32_t(i % 10);
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

std::vector<nn::BenchRecord> bench_training_step(Context& ctx, bool quick) {
  struct Case {
    const char* name;
    TrainStepCase step;
    std::vector<double> ms;
  };
  Case cases[] = {{"fp32", {ctx, false, false}, {}},
                  {"w4a4 cgpact+sat+aux", {ctx, true, true}, {}},
                  {"w4a4 cgpact+sat (no aux)", {ctx, true, false}, {}},
                  {"fp32+aux", {ctx, false, true}, {}},
                  {"fp32 graph", {ctx, false, false, true}, {}},
                  {"w4a4 cgpact+sat+aux graph", {ctx, true, true, true}, {}}};
  // Alternate the steps and take each one's median: a slow spell of a shared machine then
  // hits all of them, and the ratios stay honest.
  const int rounds = quick ? 3 : 7;
  for (Case& c : cases) c.step.rec->run();
  for (int i = 0; i < rounds; ++i)
    for (Case& c : cases) c.ms.push_back(nn::time_recording_ms(*c.step.rec, 0, 1));
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  const double f = median(cases[0].ms);
  std::vector<nn::BenchRecord> out;
  for (const Case& c : cases) {
    nn::BenchRecord r;
    r.name = std::string("train_step resnet20 w16 b128 ") + c.name;
    r.ms = median(c.ms);
    r.images_per_s = c.step.cfg.batch * 1000.0 / r.ms;
    if (&c != &cases[0]) {
      char ratio[64];
      std::snprintf(ratio, sizeof ratio, "x%.3f of fp32 (median of %d alternating runs)", r.ms / f, rounds);
      r.variant = ratio;
    }
    out.push_back(r);
  }
  return out;
}

// Every dispatch of one training step (FP32 and W4A4 CG-PACT + SAT + aux): kernel, the
// variant set, workgroups, invocations per workgroup, FLOPs (convolutions; other kernels
// report 0) and the bytes of the bound views (an upper bound on bytes moved). A dispatch
// that carries >= 1% of the step's FLOPs with fewer than 264 workgroups (two per SM of a
// 132-SM GPU) cannot fill a large GPU: counted in "starved".
nlohmann::json profile_training_steps(Context& ctx) {
  const char* walk_env = std::getenv("VKQAT_BN_WALK");
  const std::string walk = walk_env && *walk_env ? walk_env : ctx.info().is_cpu() ? "contiguous" : "interleaved";
  const std::string variant = std::string("conv ") + nn::conv_variant_name(nn::conv_variant(ctx)) + ", bn " + walk;
  nlohmann::json out = nlohmann::json::array();
  for (bool quant : {false, true}) {
    TrainStepCase step(ctx, quant, quant);
    const auto& shapes = step.rec->dispatch_shapes();
    double total = 0;
    for (const DispatchShape& d : shapes) total += d.flops;
    nlohmann::json list = nlohmann::json::array();
    int starved = 0;
    for (const DispatchShape& d : shapes) {
      const bool heavy = total > 0 && d.flops >= 0.01 * total;
      if (heavy && d.workgroups() < 264) ++starved;
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
  const std::vector<std::pair<std::string, BenchFn>> benches = {
      {"conv", nn::bench_conv2d},
      {"depthwise", nn::bench_conv2d_depthwise},
      {"elementwise", nn::bench_elementwise},
      {"reduce", nn::bench_reductions},
      {"quant", quant::bench_quant},
      {"int", quant::bench_int},
      {"train", bench_training_step},
      {"data", [](Context&, bool quick) { return nn::bench_data_pipeline(quick); }}};
  for (const std::string& name : o.only)
    if (std::none_of(benches.begin(), benches.end(), [&](const auto& b) { return b.first == name; }))
      throw Error("--only " + name + ": unknown section (conv, depthwise, elementwise, reduce, quant, int, train, data)");
  for (auto& [name, fn] : benches) {
    if (!o.only.empty() && std::find(o.only.begin(), o.only.end(), name) == o.only.end()) continue;
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
  const bool profile = o.profile && (o.only.empty() || std::find(o.only.begin(), o.only.end(), "train") != o.only.end());
  const nlohmann::json steps = profile ? profile_training_steps(ctx) : nlohmann::json();
  if (o.json) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& b : records) {
      nlohmann::json r = {{"name", b.name}, {"ms", b.ms}, {"variant", b.variant}, {"device", ctx.info().name}};
      if (b.gflops > 0) r["gflops"] = b.gflops;
      if (b.gbps > 0) r["gbps"] = b.gbps;
      if (b.images_per_s > 0) r["images_per_s"] = b.images_per_s;
      out.push_back(r);
    }
    // With --profile: {"records": [...], "train_step_dispatches": [...]}; without, the list.
    if (profile) out = {{"records", out}, {"train_step_dispatches", steps}};
    std::cout << out.dump(2) << "\n";
  } else if (profile) {
    for (const auto& s : steps) {
      std::printf("\n%s (%s): %zu dispatches, %.2f GFLOP; %d dispatches with >= 1%% of the FLOPs launch < 264 "
                  "workgroups\n", s["step"].get<std::string>().c_str(), s["variant"].get<std::string>().c_str(),
                  size_t(s["dispatches"]), double(s["flops"]) * 1e-9, int(s["starved_heavy_dispatches"]));
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
  cmd->add_option("--device", o->device, "Vulkan device index (see `vkqat devices`)")->check(CLI::NonNegativeNumber);
  cmd->add_option("--only", o->only, "only these sections: conv, depthwise, elementwise, reduce, quant, int, train, data")->delimiter(',');
  cmd->callback([&actions, o] { actions.push_back([o] { return run_bench(*o); }); });
}

}  // namespace vkqat::cli

// `vkqat bench [--json] [--quick] [--device N]`: throughput of the kernels on one device.
#include <nlohmann/json.hpp>

#include <cstdio>
#include <iostream>

#include "backend/context.h"
#include "commands.h"
#include "nn/bench.h"

namespace vkqat::cli {
namespace {

struct BenchOptions {
  bool json = false, quick = false;
  int device = -1;
};

int run_bench(const BenchOptions& o) {
  ContextOptions co;
  co.device = o.device;
  Context ctx(co);
  std::vector<nn::BenchRecord> records;
  for (auto* fn : {&nn::bench_conv2d, &nn::bench_elementwise, &nn::bench_reductions}) {
    auto r = fn(ctx, o.quick);
    records.insert(records.end(), r.begin(), r.end());
    if (!o.json)
      for (const auto& b : r) {
        if (b.gflops > 0)
          std::printf("%-52s %9.3f ms %9.2f GFLOP/s  %s\n", b.name.c_str(), b.ms, b.gflops, b.variant.c_str());
        else
          std::printf("%-52s %9.3f ms %9.2f GB/s     %s\n", b.name.c_str(), b.ms, b.gbps, b.variant.c_str());
        std::fflush(stdout);
      }
  }
  if (o.json) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& b : records) {
      nlohmann::json r = {{"name", b.name}, {"ms", b.ms}, {"variant", b.variant}, {"device", ctx.info().name}};
      if (b.gflops > 0) r["gflops"] = b.gflops;
      if (b.gbps > 0) r["gbps"] = b.gbps;
      out.push_back(r);
    }
    std::cout << out.dump(2) << "\n";
  }
  return 0;
}

}  // namespace

void add_bench_command(CLI::App& app, Actions& actions) {
  auto* cmd = app.add_subcommand("bench", "measure kernel throughput (GFLOP/s, GB/s) on the selected device");
  auto o = std::make_shared<BenchOptions>();
  cmd->add_flag("--json", o->json, "machine-readable output: a list of records");
  cmd->add_flag("--quick", o->quick, "only the main shapes");
  cmd->add_option("--device", o->device, "Vulkan device index (see `vkqat devices`)");
  cmd->callback([&actions, o] { actions.push_back([o] { return run_bench(*o); }); });
}

}  // namespace vkqat::cli

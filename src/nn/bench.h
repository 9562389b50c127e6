#pragma once
// Benchmark records for `vkqat bench`. Each op family contributes a function that times
// its kernels on the given context (replaying one Recording several times after a warm-up)
// and reports achieved throughput.
#include <string>
#include <vector>

#include "backend/context.h"
#include "backend/recording.h"

namespace vkqat::nn {

struct BenchRecord {
  std::string name;     // e.g. "conv2d_fwd n128 c16->16 28x28 k3 s1"
  double ms = 0;        // median time per run of the measured work
  double gflops = 0;    // 0 when not a FLOP-bound op
  double gbps = 0;      // 0 when not a bandwidth-bound op
  std::string variant;  // kernel variant used, e.g. "regblock" / "tiled"
  double images_per_s = 0;  // whole training steps
  double host_wait_ms = -1;  // training loops: host time blocked on step fences per step (-1: not measured)
};

// Times `rec.run()` `iters` times after `warmup` runs; returns the median in ms.
double time_recording_ms(Recording& rec, int warmup = 2, int iters = 5);

// Benchmark input: n deterministic values spread over offset +- scale.
std::vector<float> bench_ramp(int64_t n, float scale, float offset = 0.f);

// Small ops are recorded this many times per Recording so submit overhead does not dominate.
constexpr int kBenchRepeats = 10;
// Times a recording that holds kBenchRepeats copies of one op; bytes / flops are per op.
BenchRecord bench_repeated_op(Recording& rec, bool quick, const std::string& name, double bytes, double flops,
                              const std::string& variant);
template <class Op>
BenchRecord bench_op(Context& ctx, bool quick, const std::string& name, double bytes, double flops,
                     const std::string& variant, Op op) {
  Recording rec(ctx);
  for (int i = 0; i < kBenchRepeats; ++i) op(rec);
  return bench_repeated_op(rec, quick, name, bytes, flops, variant);
}

std::vector<BenchRecord> bench_conv2d(Context& ctx, bool quick);
// Depthwise forward / backward-data / backward-weight with the variant depthwise_variant()
// picks; with_direct: the Direct kernels too, timed alternately with the Blocked ones.
std::vector<BenchRecord> bench_conv2d_depthwise(Context& ctx, bool quick, bool with_direct = false);
std::vector<BenchRecord> bench_elementwise(Context& ctx, bool quick);  // relu, add, bn, pool, linear
std::vector<BenchRecord> bench_reductions(Context& ctx, bool quick);   // sum, meanvar, maxabs, sgd

}  // namespace vkqat::nn

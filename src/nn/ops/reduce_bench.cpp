// `vkqat bench` entries for the reductions and the SGD update: achieved bandwidth.
#include <string>

#include "nn/bench.h"
#include "nn/ops/reduce.h"
#include "nn/ops/sgd.h"
#include "nn/tensor.h"

namespace vkqat::nn {
std::vector<BenchRecord> bench_reductions(Context& ctx, bool quick) {
  std::vector<BenchRecord> records;
  const int n = 1 << 20;
  Tensor x(ctx, {n});
  x.upload(bench_ramp(n, 2.f));
  Tensor stats(ctx, {4});
  Tensor scratch = make_reduce_scratch(ctx, {n});
  const double bytes = 4.0 * n;
  const std::string size = " n" + std::to_string(n);
  const std::string variant = "vec4 2-pass";

  {
    Recording rec(ctx);
    for (int i = 0; i < kBenchRepeats; ++i) reduce_sum(rec, x, stats, scratch);
    records.push_back(bench_repeated_op(rec, quick, "reduce_sum" + size, bytes, 0.0, variant));
  }
  {
    Recording rec(ctx);
    ReduceOptions opt;
    opt.var_index = 1;
    for (int i = 0; i < kBenchRepeats; ++i) reduce_mean_var(rec, x, stats, stats, scratch, opt);
    records.push_back(bench_repeated_op(rec, quick, "reduce_mean_var" + size, bytes, 0.0, variant));
  }
  {
    Recording rec(ctx);
    for (int i = 0; i < kBenchRepeats; ++i) reduce_max_abs(rec, x, stats, scratch);
    records.push_back(bench_repeated_op(rec, quick, "reduce_max_abs" + size, bytes, 0.0, variant));
  }
  {
    Tensor counts(ctx, {256 + 2}, DType::U32);
    Recording rec(ctx);
    for (int i = 0; i < kBenchRepeats; ++i) histogram(rec, x, counts, -1.f, 1.f, /*accumulate=*/true);
    records.push_back(bench_repeated_op(rec, quick, "histogram 256 bins" + size, bytes, 0.0,
                              ctx.info().is_cpu() ? "private columns" : "shared atomics"));
  }
  {
    const int params = 270000;  // ResNet-20
    Tensor w(ctx, {params}), grad(ctx, {params}), buf(ctx, {params}), step_params(ctx, {1});
    w.upload(bench_ramp(params, 0.1f));
    grad.upload(bench_ramp(params, 0.01f));
    buf.zero();
    step_params.upload({1e-3f});
    SgdOptions opt;
    opt.weight_decay = 5e-4f;
    opt.nesterov = true;
    Recording rec(ctx);
    for (int i = 0; i < kBenchRepeats; ++i) sgd_update(rec, w, grad, buf, step_params, 0, opt);
    // reads w, grad, buf; writes w, buf
    records.push_back(
        bench_repeated_op(rec, quick, "sgd_update n" + std::to_string(params), 5.0 * 4 * params, 0.0, "vec4"));
  }
  return records;
}

}  // namespace vkqat::nn

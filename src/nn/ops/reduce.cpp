#include "nn/ops/reduce.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>

#include "backend/error.h"
#include "backend/kernel.h"

namespace vkqat::nn {
namespace {

// Matches OP_* in shaders/reduce_common.glsl and MODE_* in reduce_final.comp.
enum KernelOp : uint32_t { kOpSum = 0, kOpMeanVar = 1, kOpMaxAbs = 2 };
enum FinalMode : uint32_t { kModeSum = 0, kModeMean = 1, kModeVar = 2, kModeMeanVar = 3, kModeMaxAbs = 4 };

constexpr uint32_t kPartialGroup = 64;  // local size of reduce_partial

struct PartialPush {
  uint32_t outer, channels, inner, partials, step_outer, step_inner;
};
struct FinalPush {
  uint32_t partials, units, unit_elems, tail_begin, tail_count, out_a_index, out_b_index, mode;
  float count, ddof;
};
struct HistogramPush {
  uint32_t n4, n, bins, invocations;
  float lo, hi, scale;
};

// How a tensor is split for one scope: [outer, channels, inner] with inner in units.
struct Plan {
  uint32_t outer = 1, channels = 1, inner = 1;  // inner in units of unit_elems floats
  uint32_t unit_elems = 1;                      // 4: read as vec4
  uint32_t tail_begin = 0, tail_count = 0;      // whole tensor: elements past the last vec4
  uint32_t partials = kPartialGroup;            // pass-1 invocations per channel
  uint64_t elems_per_channel = 0;
};

uint64_t round_up(uint64_t v, uint64_t m) { return (v + m - 1) / m * m; }

const char* scope_name(ReduceScope s) {
  switch (s) {
    case ReduceScope::Tensor: return "tensor";
    case ReduceScope::Rows: return "rows";
    case ReduceScope::Channels: return "channels";
  }
  return "?";
}

Plan make_plan(const DeviceInfo& info, const std::vector<int>& shape, ReduceScope scope) {
  int64_t numel = 1;
  for (int d : shape) numel *= d;
  if (numel >= (int64_t(1) << 31))
    throw Error("reduce: tensor " + shape_str(shape) + " has 2^31 or more elements");
  Plan plan;
  plan.channels = uint32_t(reduce_channel_count(shape, scope));
  if (scope == ReduceScope::Channels) plan.outer = uint32_t(shape[0]);
  plan.elems_per_channel = uint64_t(numel) / plan.channels;
  uint64_t inner = plan.elems_per_channel / plan.outer;
  if (scope == ReduceScope::Tensor && numel >= 4) {
    plan.unit_elems = 4;  // the last numel % 4 elements are merged by pass 2
    plan.tail_begin = uint32_t(numel / 4 * 4);
    plan.tail_count = uint32_t(numel % 4);
    inner = numel / 4;
  } else if (scope != ReduceScope::Tensor && inner % 4 == 0) {
    plan.unit_elems = 4;
    inner /= 4;
  }
  plan.inner = uint32_t(inner);

  // Enough units per invocation to amortize its partial; enough invocations to fill the
  // device. CPU drivers run a workgroup per core at a time, GPUs want many more.
  const bool cpu = info.is_cpu();
  const uint64_t min_units = cpu ? 64 : 16;
  const uint64_t max_per_channel = cpu ? 4096 : 32768;
  const uint64_t max_total = cpu ? 65536 : (1u << 20);
  uint64_t units = uint64_t(plan.outer) * plan.inner;
  uint64_t p = round_up((units + min_units - 1) / min_units, kPartialGroup);
  p = std::clamp<uint64_t>(p, kPartialGroup, max_per_channel);
  if (plan.channels * p > max_total)
    p = std::max<uint64_t>(kPartialGroup, max_total / plan.channels / kPartialGroup * kPartialGroup);
  plan.partials = uint32_t(p);
  return plan;
}

// A power of two (tree reduction) within the device's limits: three floats of shared
// memory per invocation. CPU drivers pay per invocation and barrier, GPUs want 256.
uint32_t final_group_size(const DeviceInfo& info) { return pick_workgroup_size(info, info.is_cpu() ? 64 : 256, 12); }

void check_f32(const Tensor& t, const char* op, const char* what) {
  if (!t.defined()) throw Error(std::string(op) + ": " + what + " is undefined");
  if (t.dtype() != DType::F32)
    throw Error(std::string(op) + ": " + what + " " + t.shape_str() + " must be F32");
}

void check_out(const Tensor& out, uint32_t index, const Plan& plan, const char* op, const char* what) {
  check_f32(out, op, what);
  if (uint64_t(index) + plan.channels > uint64_t(out.numel()))
    throw Error(std::string(op) + ": " + what + " " + out.shape_str() + " has no room for " +
                std::to_string(plan.channels) + " value(s) at index " + std::to_string(index));
}

// Records both passes. out_b is only written in kModeMeanVar.
void record_reduce(Recording& rec, const char* op, KernelOp kop, FinalMode mode, const Tensor& x,
                   const Tensor& out_a, const Tensor& out_b, Tensor& scratch, const ReduceOptions& opt) {
  check_f32(x, op, "input");
  Context& ctx = rec.context();
  const Plan plan = make_plan(ctx.info(), x.shape(), opt.scope);
  check_out(out_a, opt.out_index, plan, op, "output");
  if (mode == kModeMeanVar) check_out(out_b, opt.var_index, plan, op, "variance output");
  check_f32(scratch, op, "scratch");
  const int64_t need = reduce_scratch_numel(ctx, x.shape(), opt.scope);
  if (scratch.numel() < need)
    throw Error(std::string(op) + ": scratch " + scratch.shape_str() + " is smaller than the " +
                std::to_string(need) + " floats needed for " + x.shape_str() + " over " +
                scope_name(opt.scope) + " (use make_reduce_scratch)");

  const Kernel& pass1 = ctx.kernel("reduce_partial", {kPartialGroup, 1, 1}, {kop, plan.unit_elems == 4 ? 1u : 0u});
  PartialPush pp{plan.outer, plan.channels, plan.inner, plan.partials,
                 plan.partials / plan.inner, plan.partials % plan.inner};
  rec.dispatch_1d(pass1, {x.view(), x.view(), scratch.view()}, pp, uint64_t(plan.channels) * plan.partials, op);

  const Kernel& pass2 = ctx.kernel("reduce_final", {final_group_size(ctx.info()), 1, 1}, {kop});
  FinalPush fp{plan.partials, plan.outer * plan.inner, plan.unit_elems, plan.tail_begin, plan.tail_count,
               opt.out_index, opt.var_index, mode, float(plan.elems_per_channel), opt.unbiased ? 1.f : 0.f};
  rec.dispatch(pass2, {scratch.view(), x.view(), out_a.view(), out_b.view()}, fp, Groups{plan.channels, 1, 1}, op);
}

}  // namespace

int64_t reduce_channel_count(const std::vector<int>& shape, ReduceScope scope) {
  switch (scope) {
    case ReduceScope::Tensor: return 1;
    case ReduceScope::Rows:
      if (shape.empty()) throw Error("reduce over rows needs a tensor of rank >= 1, got " + shape_str(shape));
      return shape[0];
    case ReduceScope::Channels:
      if (shape.size() < 2)
        throw Error("reduce over channels needs a tensor of rank >= 2 (N, C, ...), got " + shape_str(shape));
      return shape[1];
  }
  throw Error("reduce: unknown scope");
}

int64_t reduce_scratch_numel(const Context& ctx, const std::vector<int>& shape, ReduceScope scope) {
  const Plan plan = make_plan(ctx.info(), shape, scope);
  return int64_t(plan.channels) * plan.partials * 2;  // mean/var partials are two floats
}

Tensor make_reduce_scratch(Context& ctx, const std::vector<int>& shape, ReduceScope scope) {
  return Tensor(ctx, {int(reduce_scratch_numel(ctx, shape, scope))});
}

void reduce_sum(Recording& rec, const Tensor& x, Tensor& out, Tensor& scratch, const ReduceOptions& opt) {
  record_reduce(rec, "reduce_sum", kOpSum, kModeSum, x, out, out, scratch, opt);
}

void reduce_mean(Recording& rec, const Tensor& x, Tensor& out, Tensor& scratch, const ReduceOptions& opt) {
  record_reduce(rec, "reduce_mean", kOpSum, kModeMean, x, out, out, scratch, opt);
}

void reduce_var(Recording& rec, const Tensor& x, Tensor& out, Tensor& scratch, const ReduceOptions& opt) {
  record_reduce(rec, "reduce_var", kOpMeanVar, kModeVar, x, out, out, scratch, opt);
}

void reduce_mean_var(Recording& rec, const Tensor& x, Tensor& mean_out, Tensor& var_out, Tensor& scratch,
                     const ReduceOptions& opt) {
  record_reduce(rec, "reduce_mean_var", kOpMeanVar, kModeMeanVar, x, mean_out, var_out, scratch, opt);
}

void reduce_max_abs(Recording& rec, const Tensor& x, Tensor& out, Tensor& scratch, const ReduceOptions& opt) {
  record_reduce(rec, "reduce_max_abs", kOpMaxAbs, kModeMaxAbs, x, out, out, scratch, opt);
}

float histogram_scale(int bins, float lo, float hi) { return float(bins) / (hi - lo); }

void histogram(Recording& rec, const Tensor& x, Tensor& counts, float lo, float hi, bool accumulate) {
  check_f32(x, "histogram", "input");
  if (!counts.defined() || counts.dtype() != DType::U32 || counts.numel() < 3)
    throw Error("histogram: counts " + counts.shape_str() + " must be U32 with bins + 2 >= 3 elements");
  if (x.numel() >= (int64_t(1) << 31) || counts.numel() >= (int64_t(1) << 24))
    throw Error("histogram: input " + x.shape_str() + " or counts " + counts.shape_str() + " too large");
  Context& ctx = rec.context();
  const uint32_t bins = uint32_t(counts.numel() - 2);
  const float scale = histogram_scale(int(bins), lo, hi);
  if (!(std::isfinite(lo) && std::isfinite(hi) && lo < hi && std::isfinite(hi - lo) && std::isfinite(scale)))
    throw Error("histogram: range [" + std::to_string(lo) + ", " + std::to_string(hi) +
                "] must be finite with lo < hi and a finite bin width");
  // GPUs count with shared-memory atomics; on CPU drivers an atomic is a loop over the SIMD
  // lanes, so each invocation counts into a private shared-memory column instead (while
  // workgroup size * (bins + 2) words fit). VKQAT_HISTOGRAM=atomic|private overrides (tests).
  const uint32_t slots = bins + 2;
  const uint32_t shared_words = ctx.info().max_shared_memory / 4;
  const char* env = std::getenv("VKQAT_HISTOGRAM");
  const std::string choice = env ? env : "";
  uint32_t local = 64;
  bool use_private = choice == "private" || (choice != "atomic" && ctx.info().is_cpu());
  if (use_private) {
    local = 8;
    while (local < 64 && uint64_t(local) * 2 * slots <= shared_words) local *= 2;
    use_private = uint64_t(local) * slots <= shared_words;
  }
  const bool use_shared = uint64_t(slots) * 2 <= shared_words;
  const Kernel& k = use_private ? ctx.kernel("reduce_histogram_private", {local, 1, 1}, {slots})
                                : ctx.kernel("reduce_histogram", {local, 1, 1}, {use_shared ? slots : 1u, use_shared ? 1u : 0u});
  const uint64_t n4 = uint64_t(x.numel()) / 4;
  const uint64_t min_units = 256;  // vec4s per invocation before adding workgroups
  const uint64_t max_groups = ctx.info().is_cpu() ? 64 : 1024;
  const uint64_t groups = std::clamp<uint64_t>((n4 + local * min_units - 1) / (local * min_units), 1, max_groups);
  HistogramPush push{uint32_t(n4), uint32_t(x.numel()), bins, uint32_t(groups * local), lo, hi, scale};
  if (!accumulate) rec.fill(counts.view(), 0, "histogram zero");
  rec.dispatch(k, {x.view(), x.view(), counts.view()}, push, Groups{uint32_t(groups), 1, 1}, "histogram");
}

}  // namespace vkqat::nn

#include "quant/plan.h"

#include <algorithm>

#include "backend/error.h"
#include "backend/kernel.h"

namespace vkqat::quant::detail {
namespace {

constexpr uint32_t kLocal = kPlanLocal;

uint64_t round_up(uint64_t v, uint64_t m) { return (v + m - 1) / m * m; }

// Matches the push block of shaders/quant_reduce_final.comp.
struct FinalPush {
  uint32_t partials, mode, accumulate, channels;
  float scale, lower, momentum;
};
enum FinalMode : uint32_t { kModeSum = 0, kModeMinMax = 1 };

// A power of two (tree reduction) within the device's limits (two floats of shared memory
// per invocation).
uint32_t final_group_size(const DeviceInfo& info) { return pick_workgroup_size(info, info.is_cpu() ? 64 : 256, 8); }

void record_final(Recording& rec, const Plan& plan, const Tensor& scratch, Tensor& out, const FinalPush& push,
                  const char* label) {
  Context& ctx = rec.context();
  const Kernel& k = ctx.kernel("quant_reduce_final", {final_group_size(ctx.info()), 1, 1});
  rec.dispatch(k, {scratch.view(), out.view()}, push, Groups{plan.push.channels, 1, 1}, label);
}

}  // namespace

int64_t channel_count(const char* op, const std::vector<int>& shape, ReduceScope scope) {
  switch (scope) {
    case ReduceScope::Tensor: return 1;
    case ReduceScope::Rows:
      if (shape.empty()) throw Error(std::string(op) + ": per-row quantization needs rank >= 1, got " + nn::shape_str(shape));
      return shape[0];
    case ReduceScope::Channels:
      if (shape.size() < 2)
        throw Error(std::string(op) + ": per-channel quantization of activations needs rank >= 2 (N, C, ...), got " +
                    nn::shape_str(shape));
      return shape[1];
  }
  throw Error(std::string(op) + ": unknown scope");
}

Plan make_plan(const Context& ctx, const std::vector<int>& shape, ReduceScope scope, PlanKind kind, bool allow_vec4) {
  int64_t numel = 1;
  for (int d : shape) numel *= d;
  if (numel <= 0 || numel >= (int64_t(1) << 31))
    throw Error("quant: tensor " + nn::shape_str(shape) + " is empty or has 2^31 or more elements");
  Plan plan;
  const int64_t channels = channel_count("quant", shape, scope);
  const int64_t outer = scope == ReduceScope::Channels ? shape[0] : 1;
  plan.elems_per_channel = numel / channels;
  int64_t inner = plan.elems_per_channel / outer;
  if (allow_vec4 && inner % 4 == 0) {
    plan.vec4 = true;
    inner /= 4;
  }
  const uint64_t units = uint64_t(outer) * uint64_t(inner);
  const bool cpu = ctx.info().is_cpu();
  // chunk: units per invocation, enough to amortize the walk's set-up; Reduce plans also
  // bound the partial count so the merge stays cheap. CPU drivers want many small workgroups
  // too: a core that is busy elsewhere must not hold a large share of the work.
  uint64_t chunk;
  if (kind == PlanKind::Elementwise) {
    chunk = cpu ? 16 : 4;
  } else {
    const uint64_t max_per_channel = 32768, max_total = cpu ? (1u << 18) : (1u << 20);
    const uint64_t max_partials = std::max<uint64_t>(kLocal, std::min(max_per_channel, max_total / uint64_t(channels)));
    chunk = std::max<uint64_t>(16, (units + max_partials - 1) / max_partials);
  }
  chunk = std::max<uint64_t>(1, std::min(chunk, units));
  const uint64_t p = round_up((units + chunk - 1) / chunk, kLocal);
  plan.push = PlanPush{uint32_t(outer), uint32_t(channels), uint32_t(inner), uint32_t(p), uint32_t(chunk),
                       uint32_t(kLocal / inner), uint32_t(kLocal % inner)};
  plan.invocations = uint64_t(channels) * p;
  if (plan.invocations >= (uint64_t(1) << 32)) throw Error("quant: tensor " + nn::shape_str(shape) + " too large");
  return plan;
}

std::string kernel_name(const std::string& base, const Plan& plan) { return plan.vec4 ? base + "_vec4" : base; }

void require_shape(const char* op, const Tensor& t, const char* name, const std::vector<int>& shape) {
  if (!t.defined() || t.dtype() != nn::DType::F32 || t.shape() != shape)
    throw Error(std::string(op) + ": " + name + " " + (t.defined() ? t.shape_str() : "(undefined)") +
                " must be an F32 tensor of shape " + nn::shape_str(shape));
}

void require_numel(const char* op, const Tensor& t, const char* name, int64_t numel) {
  if (!t.defined() || t.dtype() != nn::DType::F32 || t.numel() != numel)
    throw Error(std::string(op) + ": " + name + " " + (t.defined() ? t.shape_str() : "(undefined)") +
                " must be an F32 tensor of " + std::to_string(numel) + " element(s)");
}

void require_scratch(const char* op, const Tensor& scratch, const Context& ctx, const std::vector<int>& shape,
                     ReduceScope scope) {
  const int64_t need = quant_scratch_numel(ctx, shape, scope);
  if (!scratch.defined() || scratch.dtype() != nn::DType::F32 || scratch.numel() < need)
    throw Error(std::string(op) + ": scratch " + (scratch.defined() ? scratch.shape_str() : "(undefined)") +
                " is smaller than the " + std::to_string(need) + " floats needed for " + nn::shape_str(shape) +
                " (use make_quant_scratch)");
}

void record_sum_final(Recording& rec, const Plan& plan, const Tensor& scratch, Tensor& out, float scale,
                      bool accumulate, float lower, const char* label) {
  FinalPush push{plan.push.partials, kModeSum, accumulate ? 1u : 0u, plan.push.channels, scale, lower, 0.f};
  record_final(rec, plan, scratch, out, push, label);
}

void record_minmax_final(Recording& rec, const Plan& plan, const Tensor& scratch, Tensor& range, float momentum,
                         const char* label) {
  FinalPush push{plan.push.partials, kModeMinMax, 0u, plan.push.channels, 1.f, 0.f, momentum};
  record_final(rec, plan, scratch, range, push, label);
}

}  // namespace vkqat::quant::detail

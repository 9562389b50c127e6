#pragma once
// Internal to src/quant: how a quant kernel walks its tensor (see shaders/quant_plan.glsl),
// shape checks, and the second pass that merges per-invocation partial sums.
//
// Every kernel views its tensor as [outer, channels, inner] (inner in float or vec4 units,
// vec4 when the channel's rows allow) and is dispatched as (partials / 64, channels)
// workgroups of 64; each workgroup owns a contiguous run of chunk x 64 units of its channel,
// its invocations interleaved (coalesced on GPUs, streaming on CPU drivers). Kernels that
// reduce (dalpha, ds, min/max, sum|x|) write one partial per invocation — no shared memory,
// no barriers, no atomics — and quant_reduce_final merges them in a fixed order, so results
// are deterministic.
#include <cstdint>
#include <string>
#include <vector>

#include "backend/kernel.h"
#include "quant/common.h"

namespace vkqat::quant::detail {

constexpr uint32_t kPlanLocal = 64;  // local size of every plan kernel; partials are a multiple of it

// Matches PLAN_FIELDS in shaders/quant_common.glsl.
struct PlanPush {
  uint32_t outer, channels, inner, partials, chunk, step_outer, step_inner;
};

struct Plan {
  PlanPush push{};
  bool vec4 = false;          // units are vec4 (use the kernel's _vec4 flavour)
  uint64_t invocations = 0;   // channels * partials (= partials written by a Reduce kernel)
  int64_t elems_per_channel = 0;
};

enum class PlanKind {
  Elementwise,  // no partials: as many invocations as keep the device busy
  Reduce,       // one partial per invocation: bounded count so the merge stays cheap
};

// `allow_vec4`: the kernel has a _vec4 flavour. Throws Error for tensors of 2^31+ elements.
Plan make_plan(const Context& ctx, const std::vector<int>& shape, ReduceScope scope, PlanKind kind,
               bool allow_vec4);

// "name" or "name_vec4".
std::string kernel_name(const std::string& base, const Plan& plan);

// Dispatches kernel `base` (its _vec4 flavour when plan.vec4) over the plan. `push` starts
// with the PlanPush. Specialization constant 3 (MULTI_ROW in quant_plan.glsl) drops the
// row bookkeeping when a channel is one contiguous row.
template <class P>
void dispatch_plan(Recording& rec, const std::string& base, const Plan& plan, std::initializer_list<BufferView> views,
                   const P& push, const char* label) {
  const Kernel& k = rec.context().kernel(kernel_name(base, plan), {kPlanLocal, 1, 1}, {plan.push.outer > 1 ? 1u : 0u});
  rec.dispatch(k, views, push, Groups{plan.push.partials / kPlanLocal, plan.push.channels, 1}, label);
}

// Number of channels in `scope` (1, dim 0 or dim 1); throws Error naming `op` when the
// rank is too small.
int64_t channel_count(const char* op, const std::vector<int>& shape, ReduceScope scope);

// Throws Error naming op and tensors unless `t` is a defined F32 tensor of `shape`.
void require_shape(const char* op, const Tensor& t, const char* name, const std::vector<int>& shape);
// Throws unless `t` is a defined F32 tensor with exactly `numel` elements.
void require_numel(const char* op, const Tensor& t, const char* name, int64_t numel);
// Throws unless scratch is large enough for the op.
void require_scratch(const char* op, const Tensor& scratch, const Context& ctx, const std::vector<int>& shape,
                     ReduceScope scope);

// Merges the partials of a Reduce plan written to `scratch`:
//   out[c] = max((accumulate ? out[c] : 0) + scale * sum_g partials[c][g], lower)
void record_sum_final(Recording& rec, const Plan& plan, const Tensor& scratch, Tensor& out, float scale,
                      bool accumulate, float lower, const char* label);
// Merges (min, max) partials into the running range [2, C] of min-max observers: the first
// observation (range min > max) is copied, later ones move the range by `momentum` (EMA).
void record_minmax_final(Recording& rec, const Plan& plan, const Tensor& scratch, Tensor& range, float momentum,
                         const char* label);

}  // namespace vkqat::quant::detail

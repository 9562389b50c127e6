#include "nn/ops/batchnorm2d.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>

#include "backend/error.h"
#include "backend/kernel.h"

namespace vkqat::nn {

namespace {
// Must match the push-constant block of shaders/batchnorm2d_common.glsl.
struct BnParams {
  uint32_t n, c, hw;  // hw in elements of the kernel's width
  float eps, momentum;
  uint32_t accumulate_dx, accumulate_params;
  uint32_t chunk, chunks;  // elements per workgroup along y and their number (1: one per channel)
  uint32_t sync_phase;     // kSync*
  float sync_elements;
};
constexpr uint32_t kSyncNone = 0, kSyncStatistics = 1, kSyncApply = 2;

BnReduction g_reduction = BnReduction::Auto;
uint32_t g_chunk = 0;

// One workgroup per channel: a power of two (tree reduction) within the device's limits
// (a vec3 of shared memory, 16 bytes with padding, per invocation). CPU drivers pay per
// barrier and per invocation, GPUs want many threads in flight.
uint32_t channel_workgroup_size(Context& ctx) {
  return pick_workgroup_size(ctx.info(), ctx.info().is_cpu() ? 64 : 256, 16);
}

// Specialization constants of the training kernels: RELU, ITEMS_N (eval only), CONTIGUOUS
// (each invocation walks one contiguous run: CPU drivers, measured 1.6-2.8x faster on
// lavapipe; see batchnorm2d_common.glsl). VKQAT_BN_WALK=contiguous|interleaved overrides.
// FROM_SAVED_STATS: the split forward's last pass (see batchnorm2d_common.glsl).
std::vector<uint32_t> training_specs(Context& ctx, bool relu, bool from_saved_stats = false) {
  bool contiguous = ctx.info().is_cpu();
  if (const char* e = std::getenv("VKQAT_BN_WALK"); e && *e) {
    const std::string v = e;
    if (v != "contiguous" && v != "interleaved")
      throw Error("VKQAT_BN_WALK=" + v + ": expected contiguous or interleaved");
    contiguous = v == "contiguous";
  }
  return {relu ? 1u : 0u, 1u, contiguous ? 1u : 0u, from_saved_stats ? 1u : 0u};
}

BnReduction reduction_setting() {
  if (g_reduction != BnReduction::Auto) return g_reduction;
  const char* e = std::getenv("VKQAT_BN_REDUCTION");
  if (!e || !*e) return BnReduction::Auto;
  const std::string v = e;
  if (v != "single" && v != "split") throw Error("VKQAT_BN_REDUCTION=" + v + ": expected single or split");
  return v == "split" ? BnReduction::Split : BnReduction::Single;
}

// Two workgroups per SM of a 132-SM GPU, the target of the tiled convolutions too.
constexpr uint64_t kTargetWorkgroups = 264;

// Sets p.chunk / p.chunks (p.hw already in the kernel's width); returns whether the
// reduction is split (see BnReduction). A synchronized layer (--sync-bn) is never split:
// its exchange is written for the one-workgroup-per-channel kernels' two phases.
bool plan_reduction(const Context& ctx, BnParams& p, uint32_t local, const BnStatsSync* sync) {
  const uint64_t count = uint64_t(p.n) * p.hw;
  p.chunk = uint32_t(count);
  p.chunks = 1;
  if (sync) return false;
  const BnReduction r = reduction_setting();
  const bool split = r == BnReduction::Split ||
                     (r == BnReduction::Auto && !ctx.info().is_cpu() && p.c < kTargetWorkgroups);
  if (!split) return false;
  uint64_t chunk = g_chunk;
  if (chunk == 0) {
    const uint64_t chunks = std::min<uint64_t>((kTargetWorkgroups + p.c - 1) / p.c, std::max<uint64_t>(1, count / local));
    chunk = (count + chunks - 1) / chunks;
  }
  // The chunks lie along y: at most maxComputeWorkGroupCount[1] of them.
  const uint64_t max_chunks = ctx.info().max_workgroup_count[1];
  chunk = std::max<uint64_t>(chunk, (count + max_chunks - 1) / max_chunks);
  const uint64_t chunks = (count + chunk - 1) / chunk;
  if (chunks <= 1 && r == BnReduction::Auto) return false;  // nothing to spread
  p.chunk = uint32_t(chunk);
  p.chunks = uint32_t(chunks);
  return true;
}

BnParams params_for(const char* op, const Tensor& x) {
  if (x.rank() != 4 || x.dtype() != DType::F32)
    throw Error(std::string(op) + ": x must be an F32 [N, C, H, W] tensor, got " + x.shape_str());
  return BnParams{uint32_t(x.dim(0)), uint32_t(x.dim(1)), uint32_t(x.dim(2) * x.dim(3)), 0.f, 0.f, 0, 0, 0, 1, kSyncNone, 0.f};
}

// Whether the kernels take vec4 elements: when planes split into whole, aligned vec4s (CPU
// drivers pay per load instruction: ~3x faster). Converts p.hw to that width.
bool to_vec4(BnParams& p, std::initializer_list<BufferView> activations) {
  bool vec4 = p.hw % 4 == 0;
  for (const BufferView& v : activations) vec4 = vec4 && v.offset % 16 == 0;
  if (vec4) p.hw /= 4;
  return vec4;
}

std::string width(const std::string& shader, bool vec4) { return vec4 ? shader + "_vec4" : shader; }

// The split forward's first two passes: each (channel, chunk) workgroup's shifted sums, then
// per channel mean, inv_std (into saved_mean / saved_invstd) and the running stats.
void record_split_statistics(Recording& rec, const BnParams& p, bool vec4, uint32_t local, const Tensor& x,
                             Tensor& running_mean, Tensor& running_var, Tensor& saved_mean, Tensor& saved_invstd) {
  Context& ctx = rec.context();
  const BufferView partials = rec.transient(uint64_t(p.c) * (p.chunks * 2 + 1) * sizeof(float));  // sums, shifts
  rec.dispatch(ctx.kernel(width("batchnorm2d_stats_partial", vec4), {local, 1, 1}, training_specs(ctx, false)),
               {x.view(), partials}, p, Groups{p.c, p.chunks, 1}, "batchnorm2d_stats_partial");
  BnParams per_channel = p;
  per_channel.hw = uint32_t(x.dim(2) * x.dim(3));  // the finalize kernel counts floats
  rec.dispatch_1d(ctx.kernel("batchnorm2d_stats_finalize", {64, 1, 1}),
                  {partials, running_mean.view(), running_var.view(), saved_mean.view(), saved_invstd.view()},
                  per_channel, p.c, "batchnorm2d_stats_finalize");
}

void require_channels(const char* op, const Tensor& x, const Tensor& t, const char* name) {
  if (t.dtype() != DType::F32 || t.numel() != x.dim(1) || t.rank() != 1)
    throw Error(std::string(op) + ": " + name + " " + t.shape_str() + " must be F32 [" +
                std::to_string(x.dim(1)) + "] for x " + x.shape_str());
}

void require_like_x(const char* op, const Tensor& x, const Tensor& t, const char* name) {
  if (t.shape() != x.shape() || t.dtype() != DType::F32)
    throw Error(std::string(op) + ": " + name + " " + t.shape_str() + " must be F32 of x's shape " +
                x.shape_str());
}
// The host exchanges of the two directions (record_passes' combine).
auto merge_moments(BnStatsSync* sync) {
  return [sync](float* mean, float* var, int channels, double elements) {
    sync->merge_moments(mean, var, channels, elements);
  };
}
// dgamma and dbeta, adjacent in the host buffer, summed in one exchange.
auto sum_gradients(BnStatsSync* sync) {
  return [sync](float* dgamma, float*, int channels, double) { sync->sum(dgamma, 2 * size_t(channels)); };
}

// Without a sync: dispatch() once (the single pass). With one: the statistics pass, its
// per-channel results (a, b: what the shaders' SYNC_STATISTICS writes) to host memory, the
// host exchange (combine), the combined values back into a and b, and the apply pass over
// every process's element count. bn is the dispatch's push block (dispatch() reads it).
// restore_own: a and b get this process's own values back after the apply pass.
template <class Dispatch, class Combine>
void record_passes(Recording& rec, BnParams& bn, const Tensor& x, BnStatsSync* sync, Tensor& a, Tensor& b,
                   bool restore_own, Dispatch dispatch, Combine combine) {
  if (!sync) return dispatch();
  const uint64_t bytes = a.bytes();
  const BufferView host = rec.transient(4 * bytes, MemoryKind::Host);  // [a, b] exchanged, [a, b] own
  const BufferView host_a = host.sub(0, bytes), host_b = host.sub(bytes, bytes);
  const BufferView own_a = host.sub(2 * bytes, bytes), own_b = host.sub(3 * bytes, bytes);
  bn.sync_phase = kSyncStatistics;
  dispatch();
  rec.copy(a.view(), host_a, "sync batchnorm statistics to host");
  rec.copy(b.view(), host_b, "sync batchnorm statistics to host");
  const int channels = int(a.numel());
  const double elements = double(x.dim(0)) * x.dim(2) * x.dim(3);
  rec.host_step([=] {
    auto* f = static_cast<float*>(host.mapped);
    if (restore_own) std::memcpy(f + 2 * channels, f, 2 * bytes);
    combine(f, f + channels, channels, elements);
  });
  rec.copy(host_a, a.view(), "sync batchnorm statistics from host");
  rec.copy(host_b, b.view(), "sync batchnorm statistics from host");
  bn.sync_phase = kSyncApply;
  bn.sync_elements = float(elements * sync->processes());
  dispatch();
  if (!restore_own) return;
  rec.copy(own_a, a.view(), "sync batchnorm own sums");
  rec.copy(own_b, b.view(), "sync batchnorm own sums");
}
}  // namespace

void merge_channel_moments(const float* means, const float* vars, int ranks, int channels, double elements,
                           float* mean_out, float* var_out) {
  for (int c = 0; c < channels; ++c) {
    double sum = 0;
    for (int r = 0; r < ranks; ++r) sum += means[size_t(r) * channels + c];
    const double mean = sum / ranks;
    double m2 = 0;
    for (int r = 0; r < ranks; ++r) {
      const double d = means[size_t(r) * channels + c] - mean;
      m2 += vars[size_t(r) * channels + c] * elements + elements * d * d;
    }
    mean_out[c] = float(mean);
    var_out[c] = float(m2 / (elements * ranks));
  }
}

void set_bn_reduction(BnReduction r, uint32_t chunk) {
  g_reduction = r;
  g_chunk = chunk;
}

const char* bn_reduction_setting() {
  switch (reduction_setting()) {
    case BnReduction::Single: return "single";
    case BnReduction::Split: return "split";
    default: return "auto";
  }
}

void batchnorm2d_forward_train(Recording& rec, const Tensor& x, const Tensor& gamma,
                               const Tensor& beta, Tensor& running_mean, Tensor& running_var,
                               Tensor& saved_mean, Tensor& saved_invstd, Tensor& y, float eps,
                               float momentum, bool relu, const BnQuantEpilogue* quant, const Tensor* residual,
                               BnStatsSync* sync) {
  const char* op = "batchnorm2d_forward_train";
  BnParams p = params_for(op, x);
  require_channels(op, x, gamma, "gamma");
  require_channels(op, x, beta, "beta");
  require_channels(op, x, running_mean, "running_mean");
  require_channels(op, x, running_var, "running_var");
  require_channels(op, x, saved_mean, "saved_mean");
  require_channels(op, x, saved_invstd, "saved_invstd");
  require_like_x(op, x, y, "y");
  if (uint64_t(p.n) * p.hw < 2)
    throw Error(std::string(op) + ": expected more than 1 value per channel in training, got x " +
                x.shape_str());
  p.eps = eps;
  p.momentum = momentum;
  Context& ctx = rec.context();
  const uint32_t local = channel_workgroup_size(ctx);
  if (residual) require_like_x(op, x, *residual, "residual");
  if (quant) {
    if (!quant->clip || !quant->q || quant->clip->numel() != 1 || quant->clip->dtype() != DType::F32)
      throw Error(std::string(op) + ": the quantizer epilogue needs an F32 [1] clip level and an output q");
    if (!(quant->levels >= 1.f)) throw Error(std::string(op) + ": the quantizer epilogue needs levels >= 1");
    require_like_x(op, x, *quant->q, "q");
  }
  const bool vec4 = to_vec4(p, {x.view(), y.view(), quant ? quant->q->view() : y.view(),
                                residual ? residual->view() : y.view()});
  const bool split = plan_reduction(ctx, p, local, sync);
  if (split) record_split_statistics(rec, p, vec4, local, x, running_mean, running_var, saved_mean, saved_invstd);
  // Bindings of every training-forward variant: x, the per-channel tensors, y, then the
  // quantizer's clip and q, then the residual (each only where used).
  std::vector<BufferView> views{x.view(),           gamma.view(),      beta.view(),         running_mean.view(),
                                running_var.view(), saved_mean.view(), saved_invstd.view(), y.view()};
  if (quant) views.insert(views.end(), {quant->clip->view(), quant->q->view()});
  if (residual) views.push_back(residual->view());
  const Kernel& k = ctx.kernel(width(quant ? (residual ? "batchnorm2d_train_residual_quant" : "batchnorm2d_train_quant")
                                           : (residual ? "batchnorm2d_train_residual" : "batchnorm2d_train"),
                                     vec4),
                               {local, 1, 1}, training_specs(ctx, relu, split));
  const Groups groups{p.c, p.chunks, 1};
  if (!quant) {
    const char* name = residual ? "batchnorm2d_train_residual" : relu ? "batchnorm2d_train_relu" : "batchnorm2d_train";
    record_passes(rec, p, x, sync, saved_mean, saved_invstd, false, [&] { rec.dispatch(k, views, p, groups, name); },
                  merge_moments(sync));
    return;
  }
  struct QuantParams {
    BnParams bn;
    float levels, inv_levels;
  } qp{p, quant->levels, quant->inv_levels};
  const char* name = residual ? "batchnorm2d_train_residual_quant" : "batchnorm2d_train_quant";
  record_passes(rec, qp.bn, x, sync, saved_mean, saved_invstd, false, [&] { rec.dispatch(k, views, qp, groups, name); },
                merge_moments(sync));
}

void batchnorm2d_forward_eval(Recording& rec, const Tensor& x, const Tensor& gamma,
                              const Tensor& beta, const Tensor& running_mean,
                              const Tensor& running_var, Tensor& y, float eps, bool relu) {
  const char* op = "batchnorm2d_forward_eval";
  BnParams p = params_for(op, x);
  require_channels(op, x, gamma, "gamma");
  require_channels(op, x, beta, "beta");
  require_channels(op, x, running_mean, "running_mean");
  require_channels(op, x, running_var, "running_var");
  require_like_x(op, x, y, "y");
  p.eps = eps;
  // Each workgroup covers one channel of several batch items (~8K floats) so that small
  // images do not leave most invocations idle.
  uint32_t items_per_group = std::min<uint32_t>(p.n, std::max<uint32_t>(1, 8192 / p.hw));
  std::string shader = width("batchnorm2d_eval", to_vec4(p, {x.view(), y.view()}));
  uint32_t groups_n = (p.n + items_per_group - 1) / items_per_group;
  const Kernel& k = rec.context().kernel(shader, {64, 1, 1}, {relu ? 1u : 0u, items_per_group});
  rec.dispatch(k, {x.view(), gamma.view(), beta.view(), running_mean.view(), running_var.view(), y.view()},
               p, Groups{p.c, groups_n, 1}, relu ? "batchnorm2d_eval_relu" : "batchnorm2d_eval");
}

void batchnorm2d_backward(Recording& rec, const Tensor& x, const Tensor& y, const Tensor& dy,
                          const Tensor& gamma, const Tensor& saved_mean,
                          const Tensor& saved_invstd, Tensor& dx, bool accumulate_dx,
                          Tensor& dgamma, Tensor& dbeta, bool accumulate_params, bool relu,
                          const BnQuantBackward* quant, Tensor* grad_out, BnStatsSync* sync) {
  const char* op = "batchnorm2d_backward";
  BnParams p = params_for(op, x);
  if (relu || quant) require_like_x(op, x, y, "y");
  require_like_x(op, x, dy, "dy");
  require_like_x(op, x, dx, "dx");
  require_channels(op, x, gamma, "gamma");
  require_channels(op, x, saved_mean, "saved_mean");
  require_channels(op, x, saved_invstd, "saved_invstd");
  require_channels(op, x, dgamma, "dgamma");
  require_channels(op, x, dbeta, "dbeta");
  p.accumulate_dx = accumulate_dx ? 1 : 0;
  p.accumulate_params = accumulate_params ? 1 : 0;
  // The apply pass reads the summed sums where dgamma and dbeta are: nothing to add to.
  if (sync && accumulate_params) throw Error(std::string(op) + ": a synchronized backward cannot accumulate_params");
  Context& ctx = rec.context();
  const uint32_t local = channel_workgroup_size(ctx);
  if (grad_out) {
    if (!relu && !quant) throw Error(std::string(op) + ": grad_out needs relu = true or a quantizer backward");
    require_like_x(op, x, *grad_out, "grad_out");
  }
  if (quant) {
    if (relu) throw Error(std::string(op) + ": the quantizer backward replaces the ReLU mask; pass relu = false");
    if (!quant->clip || quant->clip->numel() != 1 || quant->clip->dtype() != DType::F32 ||
        !quant->clip_grad_partials || !(quant->levels >= 1.f))
      throw Error(std::string(op) + ": the quantizer backward needs an F32 [1] clip, levels >= 1 and clip_grad_partials");
    require_channels(op, x, *quant->clip_grad_partials, "clip_grad_partials");
    if (quant->extra) require_like_x(op, x, *quant->extra, "extra");
  }
  const Tensor& y_read = relu || quant ? y : x;  // y is only read with the ReLU or quantizer
  const Tensor& extra = quant && quant->extra ? *quant->extra : dy;
  const bool vec4 = to_vec4(p, {x.view(), y.view(), dy.view(), dx.view(), extra.view(),
                                grad_out ? grad_out->view() : dx.view()});
  const bool split = plan_reduction(ctx, p, local, sync);
  struct QuantParams {
    BnParams bn;
    float levels, inv_levels;
    uint32_t calibrated, extra;
  } qp{p, quant ? quant->levels : 0.f, quant ? quant->inv_levels : 0.f, quant && quant->calibrated ? 1u : 0u,
       quant && quant->extra ? 1u : 0u};
  // The quantizer's g written to grad_out by its own kernel, after a backward without it.
  auto record_quant_grad_out = [&] {
    struct {
      uint32_t count;
      float levels, inv_levels;
      uint32_t extra;
    } gp{uint32_t(x.numel()), quant->levels, quant->inv_levels, quant->extra ? 1u : 0u};
    rec.dispatch_1d(ctx.kernel("batchnorm2d_quant_grad_out", {64, 1, 1}),
                    {y.view(), dy.view(), quant->clip->view(), extra.view(), grad_out->view()}, gp, gp.count,
                    "batchnorm2d_quant_grad_out");
  };
  const char* label = quant ? "batchnorm2d_bwd_quant"
                      : grad_out ? "batchnorm2d_bwd_grad_out"
                      : relu     ? "batchnorm2d_bwd_relu"
                                 : "batchnorm2d_bwd";
  if (split) {
    // Partial sums per (channel, chunk), their in-order sum per channel (dgamma, dbeta, the
    // clip gradient's partial and the channel sums for pass 3), then dx per (channel, chunk).
    const BufferView partials = rec.transient(uint64_t(p.c) * p.chunks * 3 * sizeof(float));
    const BufferView sums = rec.transient(uint64_t(p.c) * 2 * sizeof(float));
    std::vector<BufferView> pv{x.view(), y_read.view(), dy.view(), saved_mean.view(), partials};
    if (quant) pv.insert(pv.end(), {quant->clip->view(), extra.view()});
    const Kernel& pk = ctx.kernel(width(quant ? "batchnorm2d_bwd_quant_partial" : "batchnorm2d_bwd_partial", vec4),
                                  {local, 1, 1}, training_specs(ctx, relu));
    const Groups groups{p.c, p.chunks, 1};
    quant ? rec.dispatch(pk, pv, qp, groups, "batchnorm2d_bwd_partial")
          : rec.dispatch(pk, pv, p, groups, "batchnorm2d_bwd_partial");
    std::vector<BufferView> fv{partials, saved_invstd.view(), dgamma.view(), dbeta.view(), sums};
    if (quant) fv.push_back(quant->clip_grad_partials->view());
    rec.dispatch_1d(ctx.kernel(quant ? "batchnorm2d_bwd_quant_finalize" : "batchnorm2d_bwd_finalize", {64, 1, 1}), fv,
                    p, p.c, "batchnorm2d_bwd_finalize");
    // Pass 3 binds at most 11 storage buffers (the quantizer's with grad_out).
    const bool fuse_grad_out = grad_out && (!quant || ctx.info().max_storage_buffers_per_stage >= 11);
    std::vector<BufferView> av{x.view(),          y_read.view(),       dy.view(), gamma.view(),
                               saved_mean.view(), saved_invstd.view(), dx.view(), sums};
    if (quant) av.insert(av.end(), {quant->clip->view(), extra.view()});
    if (fuse_grad_out) av.push_back(grad_out->view());
    const std::string apply = std::string(quant ? "batchnorm2d_bwd_quant" : "batchnorm2d_bwd") +
                              (fuse_grad_out ? "_grad_out" : "") + "_apply";
    const Kernel& ak = ctx.kernel(width(apply, vec4), {local, 1, 1}, training_specs(ctx, relu));
    quant ? rec.dispatch(ak, av, qp, groups, label) : rec.dispatch(ak, av, p, groups, label);
    if (grad_out && !fuse_grad_out) record_quant_grad_out();
    return;
  }
  // Bindings of every one-workgroup-per-channel backward: x, y (read with the ReLU or
  // quantizer), dy, the per-channel tensors, dx and the parameter gradients; then the
  // quantizer's clip, extra and partials; then grad_out (each only where used).
  std::vector<BufferView> views{x.view(),     y_read.view(), dy.view(),          gamma.view(),
                                saved_mean.view(), saved_invstd.view(), dx.view(), dgamma.view(),
                                dbeta.view()};
  if (quant) {
    // The fused grad_out kernel binds 13 storage buffers: on a device with fewer per stage
    // the 12-buffer kernel runs, then batchnorm2d_quant_grad_out writes grad_out.
    const bool fuse_grad_out = grad_out && ctx.info().max_storage_buffers_per_stage >= 13;
    const char* name = fuse_grad_out ? "batchnorm2d_bwd_quant_grad_out" : "batchnorm2d_bwd_quant";
    views.insert(views.end(), {quant->clip->view(), extra.view(), quant->clip_grad_partials->view()});
    if (fuse_grad_out) views.push_back(grad_out->view());
    const Kernel& k = ctx.kernel(width(name, vec4), {local, 1, 1}, training_specs(ctx, false));
    record_passes(rec, qp.bn, x, sync, dgamma, dbeta, true, [&] { rec.dispatch(k, views, qp, Groups{p.c, 1, 1}, name); },
                  sum_gradients(sync));
    if (grad_out && !fuse_grad_out) record_quant_grad_out();
    return;
  }
  if (grad_out) views.push_back(grad_out->view());
  const Kernel& k = ctx.kernel(width(grad_out ? "batchnorm2d_bwd_grad_out" : "batchnorm2d_bwd", vec4), {local, 1, 1},
                               training_specs(ctx, relu));
  record_passes(rec, p, x, sync, dgamma, dbeta, true, [&] { rec.dispatch(k, views, p, Groups{p.c, 1, 1}, label); },
                sum_gradients(sync));
}

}  // namespace vkqat::nn

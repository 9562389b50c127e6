// BatchNorm2d kernels, written once for float and vec4 elements (the host picks vec4 when
// H*W % 4 == 0: CPU drivers pay per load instruction, so vec4 is ~3x faster there).
// Define VEC_WIDTH (1 or 4) and BN_KERNEL before including:
//   BN_TRAIN: training forward, one workgroup per channel, one dispatch:
//     1) batch mean and biased variance (sums shifted by the channel's first element, which
//        keeps E[x^2] - E[x]^2 accurate when |mean| >> std),
//     2) invocation 0 saves mean and inv_std and updates the running stats like PyTorch
//        (momentum, unbiased variance for running_var),
//     3) y = (x - mean) * inv_std * gamma + beta, optional fused ReLU.
//     With BN_QUANT 1 the same pass also writes q = Q(y), the uniform activation quantizer
//     on [0, clip] with `levels` steps (PACT's forward, bit for bit: quant_pact.glsl):
//     r = clamp(y, 0, clip) * (levels / clip), q = round_half_away(r) * (clip * inv_levels),
//     clip = max(clip_buf[0], MIN_SCALE). y is kept: the quantizer's backward reads it.
//     With BN_RESIDUAL 1 step 3 adds a residual first: y = relu?(bn(x) + res) (a residual
//     block's sum, one pass instead of BN then add); with BN_QUANT too, q = Q(y) of that sum.
//   BN_BACKWARD: training-mode backward, one workgroup per channel, one dispatch:
//     g = dy (masked by y > 0 with the fused ReLU), xhat = (x - mean) * inv_std,
//     dbeta = sum(g), dgamma = sum(g * xhat),
//     dx = gamma * inv_std * (g - dbeta / M - xhat * dgamma / M),  M = N*H*W.
//     With BN_GRAD_OUT 1 (and the ReLU or BN_QUANT) the second sweep also writes g to g_out:
//     the gradient of BN's output, when it has another consumer (a residual sum's shortcut).
//     With BN_QUANT 1 it is also the backward of the quantizer epilogue (PACT's, bit for
//     bit: quant_pact.glsl): dy is the gradient of q, g = dy [0 <= y < clip] (+ extra[] when
//     p.extra: a gradient of y from another consumer), and the workgroup writes channel c's
//     Kahan partial of the clip gradient, sum_{y >= clip} dy (+ with p.calibrated, CG-PACT's
//     sum_{y < clip} dy (round(r) - r) / levels, r = max(y, 0) * levels / clip), to clip_grad[c].
//   Synchronized batch norm (data parallel: one batch's statistics over several processes)
//   splits both one-workgroup-per-channel training kernels in two dispatches (p.sync_phase;
//   0: the one pass above; the host never splits the reduction of a synchronized layer):
//     SYNC_STATISTICS: forward: this process's mean -> saved_mean[c], biased variance ->
//       saved_invstd[c], nothing else; backward: this process's sum(g * xhat) -> dgamma[c],
//       sum(g) -> dbeta[c] (and the clip partial), nothing else.
//     SYNC_APPLY: the host has put the statistics of every process's values where phase 1
//       wrote its own (forward: mean, biased variance; backward: the two sums), and
//       p.sync_elements is the element count they span; the kernel does the rest of the
//       single pass with them (saved_invstd, running stats with the unbiased variance of
//       that count, y; or dx).
//   BN_EVAL: y = (x - running_mean) / sqrt(running_var + eps) * gamma + beta (+ ReLU);
//     workgroup (c, b) handles channel c of batch items [b * ITEMS_N, (b + 1) * ITEMS_N).
// Two-level reductions (GPUs with few channels: one workgroup per channel leaves most of
// the device idle). Workgroup (c, k) takes chunk k, elements [k * p.chunk, (k + 1) * p.chunk),
// of channel c (the one-workgroup kernels above run with p.chunk = N*H*W, p.chunks = 1):
//   BN_STATS_PARTIAL: the chunk's shifted sums (shift: the channel's first element, the same
//     for every chunk) to partials[(c * chunks + k) * 2 + {0, 1}], and (chunk 0) the shift
//     to partials[C * chunks * 2 + c];
//   BN_STATS_FINALIZE (one invocation per channel): adds them in chunk order (Kahan), then
//     step 2 of BN_TRAIN; BN_TRAIN with FROM_SAVED_STATS then does step 3 per chunk;
//   BN_GRAD_PARTIAL: the chunk's sums of g, g * (x - mean) and the clip gradient's terms to
//     partials[(c * chunks + k) * 3 + {0, 1, 2}];
//   BN_GRAD_FINALIZE (one invocation per channel): adds them in chunk order (Kahan), writes
//     dgamma, dbeta (and clip_grad) and channel_sums[c] = (sum g, sum g * xhat);
//   BN_GRAD_APPLY: BN_BACKWARD's second sweep over the chunk from channel_sums.
// Fixed orders throughout: a replay gives the same bits.
// A workgroup walks a channel's elements (j = n*HW + i) without a division per element:
// each invocation tracks i and the flat NCHW address. GPUs interleave the invocations (steps
// of the workgroup size: coalesced loads); CPU drivers (CONTIGUOUS) give each invocation one
// contiguous run, since they run a workgroup's SIMD batches one after the other and an
// interleaved walk would stream the channel through the cache once per batch.
// The workgroup size must be a power of two (tree reduction).
#define BN_TRAIN 0
#define BN_BACKWARD 1
#define BN_EVAL 2
#define BN_STATS_PARTIAL 3
#define BN_STATS_FINALIZE 4
#define BN_GRAD_PARTIAL 5
#define BN_GRAD_FINALIZE 6
#define BN_GRAD_APPLY 7
#define SYNC_NONE 0u
#define SYNC_STATISTICS 1u
#define SYNC_APPLY 2u
#ifndef BN_QUANT
#define BN_QUANT 0
#endif
#ifndef BN_RESIDUAL
#define BN_RESIDUAL 0
#endif
#ifndef BN_GRAD_OUT
#define BN_GRAD_OUT 0
#endif
#if VEC_WIDTH == 4
#define VEC vec4
#define HSUM(v) dot(v, vec4(1.0))
#define FIRST(v) (v).x
#define IS_POSITIVE(v) greaterThan(v, vec4(0.0))
#define IS_NEGATIVE(v) lessThan(v, vec4(0.0))
#else
#define VEC float
#define HSUM(v) (v)
#define FIRST(v) (v)
#define IS_POSITIVE(v) ((v) > 0.0)
#define IS_NEGATIVE(v) ((v) < 0.0)
#endif

layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
layout(constant_id = 3) const bool RELU = false;
layout(constant_id = 4) const uint ITEMS_N = 1;  // BN_EVAL: batch items per workgroup
layout(constant_id = 5) const bool CONTIGUOUS = false;  // training kernels: see ChannelWalk
// BN_TRAIN: read mean and inv_std from saved_mean / saved_invstd (written by
// BN_STATS_FINALIZE) and only normalize this workgroup's chunk.
layout(constant_id = 6) const bool FROM_SAVED_STATS = false;

layout(push_constant) uniform Params {
  uint n, c, hw;  // tensor is [n, c, hw], hw counted in VEC elements
  float eps, momentum;
  uint accumulate_dx, accumulate_params;
  uint chunk, chunks;  // elements (VEC) per workgroup along y, and the number of chunks
  uint sync_phase;      // SYNC_*: see the top of this file
  float sync_elements;  // SYNC_APPLY: the elements per channel of all processes
#if BN_QUANT && BN_KERNEL != BN_GRAD_FINALIZE
  float levels, inv_levels;
#if BN_KERNEL == BN_BACKWARD || BN_KERNEL == BN_GRAD_PARTIAL || BN_KERNEL == BN_GRAD_APPLY
  uint calibrated, extra;
#endif
#endif
} p;

#if BN_KERNEL == BN_TRAIN
layout(std430, binding = 0) readonly buffer Xb { VEC x[]; };
layout(std430, binding = 1) readonly buffer Gb { float gamma[]; };
layout(std430, binding = 2) readonly buffer Bb { float beta[]; };
layout(std430, binding = 3) buffer RMb { float running_mean[]; };
layout(std430, binding = 4) buffer RVb { float running_var[]; };
layout(std430, binding = 5) buffer SMb { float saved_mean[]; };  // read with FROM_SAVED_STATS, SYNC_APPLY
layout(std430, binding = 6) buffer SIb { float saved_invstd[]; };
layout(std430, binding = 7) writeonly buffer Yb { VEC y[]; };
#if BN_QUANT
layout(std430, binding = 8) readonly buffer Clipb { float clip_buf[]; };
layout(std430, binding = 9) writeonly buffer Qb { VEC q[]; };
#include "quant_round.glsl"
#endif
#if BN_RESIDUAL
layout(std430, binding = BN_QUANT == 1 ? 10 : 8) readonly buffer Resb { VEC res[]; };
#endif
#elif BN_KERNEL == BN_BACKWARD || BN_KERNEL == BN_GRAD_APPLY
layout(std430, binding = 0) readonly buffer Xb { VEC x[]; };
layout(std430, binding = 1) readonly buffer Yb { VEC y[]; };  // read with RELU or BN_QUANT
layout(std430, binding = 2) readonly buffer DYb { VEC dy[]; };
layout(std430, binding = 3) readonly buffer Gb { float gamma[]; };
layout(std430, binding = 4) readonly buffer SMb { float saved_mean[]; };
layout(std430, binding = 5) readonly buffer SIb { float saved_invstd[]; };
layout(std430, binding = 6) buffer DXb { VEC dx[]; };  // read when accumulating
// BN_GRAD_APPLY binds the channel sums where BN_BACKWARD binds dgamma and dbeta, and no
// clip gradient (BN_GRAD_FINALIZE writes those).
#if BN_KERNEL == BN_BACKWARD
layout(std430, binding = 7) buffer DGb { float dgamma[]; };
layout(std430, binding = 8) buffer DBb { float dbeta[]; };
#define BN_CLIP_BINDING 9
#define BN_GRAD_OUT_BINDING (BN_QUANT == 1 ? 12 : 9)
#else
layout(std430, binding = 7) readonly buffer CSb { vec2 channel_sums[]; };
#define BN_CLIP_BINDING 8
#define BN_GRAD_OUT_BINDING (BN_QUANT == 1 ? 10 : 8)
#endif
#if BN_QUANT
layout(std430, binding = BN_CLIP_BINDING) readonly buffer Clipb { float clip_buf[]; };
layout(std430, binding = BN_CLIP_BINDING + 1) readonly buffer Eb { VEC extra[]; };  // read when p.extra
#if BN_KERNEL == BN_BACKWARD
layout(std430, binding = 11) writeonly buffer CGb { float clip_grad[]; };
#include "kahan.glsl"
#endif
#include "pact_grad.glsl"
#endif
#if BN_GRAD_OUT
layout(std430, binding = BN_GRAD_OUT_BINDING) writeonly buffer GOb { VEC g_out[]; };
#endif
#elif BN_KERNEL == BN_EVAL
layout(std430, binding = 0) readonly buffer Xb { VEC x[]; };
layout(std430, binding = 1) readonly buffer Gb { float gamma[]; };
layout(std430, binding = 2) readonly buffer Bb { float beta[]; };
layout(std430, binding = 3) readonly buffer RMb { float running_mean[]; };
layout(std430, binding = 4) readonly buffer RVb { float running_var[]; };
layout(std430, binding = 5) writeonly buffer Yb { VEC y[]; };
#elif BN_KERNEL == BN_STATS_PARTIAL
layout(std430, binding = 0) readonly buffer Xb { VEC x[]; };
layout(std430, binding = 1) writeonly buffer Pb { float partials[]; };
#elif BN_KERNEL == BN_STATS_FINALIZE  // VEC_WIDTH 1: p.hw counts floats
layout(std430, binding = 0) readonly buffer Pb { float partials[]; };
layout(std430, binding = 1) buffer RMb { float running_mean[]; };
layout(std430, binding = 2) buffer RVb { float running_var[]; };
layout(std430, binding = 3) writeonly buffer SMb { float saved_mean[]; };
layout(std430, binding = 4) writeonly buffer SIb { float saved_invstd[]; };
#include "kahan.glsl"
#elif BN_KERNEL == BN_GRAD_PARTIAL
layout(std430, binding = 0) readonly buffer Xb { VEC x[]; };
layout(std430, binding = 1) readonly buffer Yb { VEC y[]; };  // read with RELU or BN_QUANT
layout(std430, binding = 2) readonly buffer DYb { VEC dy[]; };
layout(std430, binding = 3) readonly buffer SMb { float saved_mean[]; };
layout(std430, binding = 4) writeonly buffer Pb { float partials[]; };
#if BN_QUANT
layout(std430, binding = 5) readonly buffer Clipb { float clip_buf[]; };
layout(std430, binding = 6) readonly buffer Eb { VEC extra[]; };  // read when p.extra
#include "pact_grad.glsl"
#include "kahan.glsl"
#endif
#elif BN_KERNEL == BN_GRAD_FINALIZE
layout(std430, binding = 0) readonly buffer Pb { float partials[]; };
layout(std430, binding = 1) readonly buffer SIb { float saved_invstd[]; };
layout(std430, binding = 2) buffer DGb { float dgamma[]; };
layout(std430, binding = 3) buffer DBb { float dbeta[]; };
layout(std430, binding = 4) writeonly buffer CSb { vec2 channel_sums[]; };
#if BN_QUANT
layout(std430, binding = 5) writeonly buffer CGb { float clip_grad[]; };
#endif
#include "kahan.glsl"
#endif

struct ChannelWalk {
  uint j;     // element index inside the channel, n*HW + i
  uint i;     // position inside the plane
  uint addr;  // flat index into the NCHW tensor
};

ChannelWalk walk_begin(uint c, uint first) {
  uint n = first / p.hw;
  uint i = first - n * p.hw;
  return ChannelWalk(first, i, n * p.c * p.hw + c * p.hw + i);
}

const uint WALK_STEP = CONTIGUOUS ? 1u : gl_WorkGroupSize.x;

void walk_next(inout ChannelWalk w) {
  uint step = WALK_STEP;
  uint step_n = step / p.hw, step_i = step - step_n * p.hw;
  w.j += step;
  w.i += step_i;
  w.addr += step_n * p.c * p.hw + step_i;
  if (w.i >= p.hw) {  // wrapped into the next plane of this channel
    w.i -= p.hw;
    w.addr += (p.c - 1u) * p.hw;
  }
}

// This invocation's share of its workgroup's chunk (gl_WorkGroupID.y) of the channel: the
// walk starts at j = first and stops at end (one run each with CONTIGUOUS, else every
// gl_WorkGroupSize.x-th element).
void invocation_share(out uint first, out uint end) {
  uint count = p.n * p.hw;
  uint begin = min(gl_WorkGroupID.y * p.chunk, count), stop = min(begin + p.chunk, count);
  uint run = (stop - begin + gl_WorkGroupSize.x - 1u) / gl_WorkGroupSize.x;
  first = CONTIGUOUS ? min(begin + gl_LocalInvocationID.x * run, stop) : begin + gl_LocalInvocationID.x;
  end = CONTIGUOUS ? min(first + run, stop) : stop;
}

VEC relu_if(VEC v) { return RELU ? mix(v, VEC(0.0), IS_NEGATIVE(v)) : v; }

#if BN_KERNEL == BN_TRAIN || BN_KERNEL == BN_BACKWARD || BN_KERNEL == BN_STATS_PARTIAL || BN_KERNEL == BN_GRAD_PARTIAL
shared vec3 red[gl_WorkGroupSize.x];

// Tree reduction of (up to) three sums over the workgroup; every invocation gets the totals.
vec3 workgroup_sum3(vec3 v) {
  uint lid = gl_LocalInvocationID.x;
  red[lid] = v;
  barrier();
  for (uint s = gl_WorkGroupSize.x / 2u; s > 0u; s >>= 1u) {
    if (lid < s) red[lid] += red[lid + s];
    barrier();
  }
  return red[0];
}
#endif

#if BN_KERNEL == BN_TRAIN || BN_KERNEL == BN_STATS_PARTIAL
// The workgroup's sums of (x - shift) and (x - shift)^2 over its chunk of channel c.
vec3 shifted_sums(uint c, float shift) {
  uint first, end;
  invocation_share(first, end);
  VEC s1 = VEC(0.0), s2 = VEC(0.0);
  for (ChannelWalk w = walk_begin(c, first); w.j < end; walk_next(w)) {
    VEC v = x[w.addr] - shift;
    s1 += v;
    s2 += v * v;
  }
  return workgroup_sum3(vec3(HSUM(s1), HSUM(s2), 0.0));
}
#endif

#if BN_KERNEL == BN_TRAIN || BN_KERNEL == BN_STATS_FINALIZE
// Step 2: mean and biased variance from the channel's shifted sums over `elements` values.
void shifted_moments(float s1, float s2, float shift, float elements, out float mean, out float var) {
  float mean_shifted = s1 / elements;
  var = max(s2 / elements - mean_shifted * mean_shifted, 0.0);
  mean = shift + mean_shifted;
}

// inv_std of them; saves mean and inv_std and updates the running stats like PyTorch when `save`.
void save_stats(uint c, float mean, float var, float elements, bool save, out float inv_std) {
  inv_std = 1.0 / sqrt(var + p.eps);
  if (save) {
    saved_mean[c] = mean;
    saved_invstd[c] = inv_std;
    float unbiased = var * elements / (elements - 1.0);
    running_mean[c] = (1.0 - p.momentum) * running_mean[c] + p.momentum * mean;
    running_var[c] = (1.0 - p.momentum) * running_var[c] + p.momentum * unbiased;
  }
}
#endif

#if BN_KERNEL == BN_TRAIN
void main() {
  uint c = gl_WorkGroupID.x;
  float mean, inv_std;
  bool lead = gl_LocalInvocationID.x == 0u;
  if (FROM_SAVED_STATS) {
    mean = saved_mean[c];
    inv_std = saved_invstd[c];
  } else if (p.sync_phase == SYNC_APPLY) {  // every process's statistics, from the host
    mean = saved_mean[c];
    float var = saved_invstd[c];
    barrier();  // every invocation has read them before invocation 0 overwrites saved_invstd
    save_stats(c, mean, var, p.sync_elements, lead, inv_std);
  } else {
    float shift = FIRST(x[c * p.hw]), var;
    vec3 sums = shifted_sums(c, shift);
    shifted_moments(sums.x, sums.y, shift, float(p.n * p.hw) * float(VEC_WIDTH), mean, var);
    if (p.sync_phase == SYNC_STATISTICS) {
      if (lead) {
        saved_mean[c] = mean;
        saved_invstd[c] = var;
      }
      return;
    }
    save_stats(c, mean, var, float(p.n * p.hw) * float(VEC_WIDTH), lead, inv_std);
  }
  uint walk_first, walk_end;
  invocation_share(walk_first, walk_end);

  float scale = gamma[c] * inv_std, bias = beta[c];
#if BN_RESIDUAL
#define BN_OUT(addr) relu_if(((x[addr] - mean) * scale + bias) + res[addr])
#else
#define BN_OUT(addr) relu_if((x[addr] - mean) * scale + bias)
#endif
#if BN_QUANT
  float clip = max(clip_buf[0], MIN_SCALE);
  float q_scale = p.levels / clip, q_step = clip * p.inv_levels;
  for (ChannelWalk w = walk_begin(c, walk_first); w.j < walk_end; walk_next(w)) {
    VEC v = BN_OUT(w.addr);
    y[w.addr] = v;
    VEC qv;
#if VEC_WIDTH == 4
    for (int l = 0; l < 4; ++l) {
      precise float r = clamp(v[l], 0.0, clip) * q_scale;
      precise float level = round_half_away(r) * q_step;
      qv[l] = level;
    }
#else
    precise float r = clamp(v, 0.0, clip) * q_scale;
    precise float level = round_half_away(r) * q_step;
    qv = level;
#endif
    q[w.addr] = qv;
  }
#else
  for (ChannelWalk w = walk_begin(c, walk_first); w.j < walk_end; walk_next(w)) y[w.addr] = BN_OUT(w.addr);
#endif
#undef BN_OUT
}

#elif BN_KERNEL == BN_STATS_PARTIAL
void main() {
  uint c = gl_WorkGroupID.x;
  float shift = FIRST(x[c * p.hw]);
  vec3 sums = shifted_sums(c, shift);
  if (gl_LocalInvocationID.x == 0u) {
    uint at = (c * p.chunks + gl_WorkGroupID.y) * 2u;
    partials[at] = sums.x;
    partials[at + 1u] = sums.y;
    if (gl_WorkGroupID.y == 0u) partials[p.c * p.chunks * 2u + c] = shift;
  }
}

#elif BN_KERNEL == BN_STATS_FINALIZE
void main() {
  uint c = gl_GlobalInvocationID.x;
  if (c >= p.c) return;
  float s1 = 0.0, s1_comp = 0.0, s2 = 0.0, s2_comp = 0.0;
  for (uint k = 0u; k < p.chunks; ++k) {
    kahan_add(s1, s1_comp, partials[(c * p.chunks + k) * 2u]);
    kahan_add(s2, s2_comp, partials[(c * p.chunks + k) * 2u + 1u]);
  }
  float mean, var, inv_std;
  shifted_moments(s1, s2, partials[p.c * p.chunks * 2u + c], float(p.n * p.hw), mean, var);
  save_stats(c, mean, var, float(p.n * p.hw), true, inv_std);
}

#elif BN_KERNEL == BN_BACKWARD || BN_KERNEL == BN_GRAD_PARTIAL || BN_KERNEL == BN_GRAD_APPLY
#if BN_QUANT
// The quantizer's straight-through gradient g = dq [0 <= y < clip] (+ extra), and the
// element's term of the clip gradient (see the top of this file and quant_pact.glsl).
VEC quant_grad(uint addr, float clip, float scale, out VEC clip_term) {
  VEC yv = y[addr], dq = dy[addr], g;
#if VEC_WIDTH == 4
  for (int l = 0; l < 4; ++l) g[l] = pact_grad(yv[l], dq[l], clip, scale, p.inv_levels, p.calibrated != 0u, clip_term[l]);
#else
  g = pact_grad(yv, dq, clip, scale, p.inv_levels, p.calibrated != 0u, clip_term);
#endif
  return p.extra != 0u ? g + extra[addr] : g;
}
#define GRAD_SETUP                                                      \
  float clip = max(clip_buf[0], MIN_SCALE), q_scale = p.levels / clip; \
  VEC term;
#define GRAD(addr) quant_grad(addr, clip, q_scale, term)
#else
VEC masked_grad(uint addr) { return RELU ? mix(VEC(0.0), dy[addr], IS_POSITIVE(y[addr])) : dy[addr]; }
#define GRAD_SETUP
#define GRAD(addr) masked_grad(addr)
#endif

#if BN_KERNEL != BN_GRAD_APPLY
// The first sweep over the workgroup's chunk of channel c: the sums of g, g * (x - mean)
// and (BN_QUANT) the clip gradient's terms (each invocation's Kahan partial).
vec3 gradient_sums(uint c, float mean) {
  uint first, end;
  invocation_share(first, end);
  GRAD_SETUP
#if BN_QUANT
  VEC s_clip = VEC(0.0), s_clip_comp = VEC(0.0);
#endif
  VEC s_g = VEC(0.0), s_gx = VEC(0.0);
  for (ChannelWalk w = walk_begin(c, first); w.j < end; walk_next(w)) {
    VEC g = GRAD(w.addr);
    s_g += g;
    s_gx += g * (x[w.addr] - mean);
#if BN_QUANT
    kahan_add(s_clip, s_clip_comp, term);
#endif
  }
#if BN_QUANT
  precise VEC clip_partial = s_clip - s_clip_comp;
  return workgroup_sum3(vec3(HSUM(s_g), HSUM(s_gx), HSUM(clip_partial)));
#else
  return workgroup_sum3(vec3(HSUM(s_g), HSUM(s_gx), 0.0));
#endif
}
#endif

#if BN_KERNEL != BN_GRAD_PARTIAL
// The second sweep over the workgroup's chunk: dx (and g_out) from the channel's sums.
// `elements`: the count the sums span (every process's with SYNC_APPLY).
void apply_gradient(uint c, float mean, float inv_std, float sum_g, float sum_gxhat, float elements) {
  uint first, end;
  invocation_share(first, end);
  GRAD_SETUP
  float scale = gamma[c] * inv_std;
  float mean_g = sum_g / elements, mean_gxhat = sum_gxhat / elements;
  for (ChannelWalk w = walk_begin(c, first); w.j < end; walk_next(w)) {
    VEC xhat = (x[w.addr] - mean) * inv_std, g = GRAD(w.addr);
    VEC v = scale * (g - mean_g - xhat * mean_gxhat);
    dx[w.addr] = p.accumulate_dx != 0u ? dx[w.addr] + v : v;
#if BN_GRAD_OUT
    g_out[w.addr] = g;
#endif
  }
}
#endif

#if BN_KERNEL == BN_BACKWARD
void main() {
  uint c = gl_WorkGroupID.x;
  float mean = saved_mean[c], inv_std = saved_invstd[c];
  float elements = float(p.n * p.hw) * float(VEC_WIDTH), sum_g, sum_gxhat;
  if (p.sync_phase == SYNC_APPLY) {  // every process's sums, from the host (dgamma, dbeta stay)
    sum_g = dbeta[c];
    sum_gxhat = dgamma[c];
    elements = p.sync_elements;
  } else {
    vec3 sums = gradient_sums(c, mean);
    sum_g = sums.x, sum_gxhat = sums.y * inv_std;
    if (gl_LocalInvocationID.x == 0u) {
      bool acc = p.accumulate_params != 0u;
      dgamma[c] = acc ? dgamma[c] + sum_gxhat : sum_gxhat;
      dbeta[c] = acc ? dbeta[c] + sum_g : sum_g;
#if BN_QUANT
      clip_grad[c] = sums.z;
#endif
    }
    if (p.sync_phase == SYNC_STATISTICS) return;
  }
  apply_gradient(c, mean, inv_std, sum_g, sum_gxhat, elements);
}
#elif BN_KERNEL == BN_GRAD_PARTIAL
void main() {
  uint c = gl_WorkGroupID.x;
  vec3 sums = gradient_sums(c, saved_mean[c]);
  if (gl_LocalInvocationID.x == 0u) {
    uint at = (c * p.chunks + gl_WorkGroupID.y) * 3u;
    partials[at] = sums.x;
    partials[at + 1u] = sums.y;
    partials[at + 2u] = sums.z;
  }
}
#else  // BN_GRAD_APPLY
void main() {
  uint c = gl_WorkGroupID.x;
  vec2 sums = channel_sums[c];
  apply_gradient(c, saved_mean[c], saved_invstd[c], sums.x, sums.y, float(p.n * p.hw) * float(VEC_WIDTH));
}
#endif
#undef GRAD
#undef GRAD_SETUP

#elif BN_KERNEL == BN_GRAD_FINALIZE
void main() {
  uint c = gl_GlobalInvocationID.x;
  if (c >= p.c) return;
  float s_g = 0.0, s_g_comp = 0.0, s_gx = 0.0, s_gx_comp = 0.0, s_clip = 0.0, s_clip_comp = 0.0;
  for (uint k = 0u; k < p.chunks; ++k) {
    uint at = (c * p.chunks + k) * 3u;
    kahan_add(s_g, s_g_comp, partials[at]);
    kahan_add(s_gx, s_gx_comp, partials[at + 1u]);
    kahan_add(s_clip, s_clip_comp, partials[at + 2u]);
  }
  float sum_g = s_g, sum_gxhat = s_gx * saved_invstd[c];
  bool acc = p.accumulate_params != 0u;
  dgamma[c] = acc ? dgamma[c] + sum_gxhat : sum_gxhat;
  dbeta[c] = acc ? dbeta[c] + sum_g : sum_g;
  channel_sums[c] = vec2(sum_g, sum_gxhat);
#if BN_QUANT
  clip_grad[c] = s_clip;
#endif
}

#else
void main() {
  uint c = gl_WorkGroupID.x;
  uint n_begin = gl_WorkGroupID.y * ITEMS_N;
  uint end = min(p.n, n_begin + ITEMS_N) * p.hw;  // the walk stops at this j
  float mean = running_mean[c];
  float scale = gamma[c] / sqrt(running_var[c] + p.eps), bias = beta[c];
  for (ChannelWalk w = walk_begin(c, n_begin * p.hw + gl_LocalInvocationID.x); w.j < end; walk_next(w))
    y[w.addr] = relu_if((x[w.addr] - mean) * scale + bias);
}
#endif

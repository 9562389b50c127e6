// Min-max uniform quantizers (src/quant/minmax.h), per tensor or per channel (the plan's
// channels). Define VEC_WIDTH and MINMAX_KERNEL before including:
//   0 symmetric weights, forward: m = stat[c] (max|w|), s = max(m, MIN_SCALE) * (1/Qp),
//     wq = round(clamp(w * (1/s), -Qp, Qp)) * s
//   1 asymmetric activations, forward, from the range [2, C] (row 0 min, row 1 max):
//     lo = min(min, 0), hi = max(max, 0), s = max((hi - lo) * (1/n), MIN_SCALE),
//     zp = clamp(round(-lo * (1/s)), 0, n), qi = round(x * (1/s)) + zp,
//     y = (clamp(qi, 0, n) - zp) * s
//   2 asymmetric activations, backward: dx (+)= g [0 <= qi <= n]
//   3 observer pass 1: one (min, max) partial per invocation (quant_reduce_final merges
//     them into the running range)
#include "quant_common.glsl"

layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;

layout(std430, binding = 0) readonly buffer Xb { VEC x[]; };
#if MINMAX_KERNEL == 0
layout(std430, binding = 1) readonly buffer Statb { float stat[]; };
layout(std430, binding = 2) writeonly buffer Yb { VEC y[]; };
layout(push_constant) uniform Params { PLAN_FIELDS float qp; float inv_qp; } p;
#elif MINMAX_KERNEL == 1
layout(std430, binding = 1) readonly buffer Rangeb { float range[]; };
layout(std430, binding = 2) writeonly buffer Yb { VEC y[]; };
layout(push_constant) uniform Params { PLAN_FIELDS float n; float inv_n; } p;
#elif MINMAX_KERNEL == 2
layout(std430, binding = 1) readonly buffer Rangeb { float range[]; };
layout(std430, binding = 2) readonly buffer Gb { VEC g[]; };
layout(std430, binding = 3) buffer DXb { VEC dx[]; };  // read when accumulating
layout(push_constant) uniform Params { PLAN_FIELDS float n; float inv_n; uint accumulate; } p;
#else
layout(std430, binding = 1) writeonly buffer Partb { float partials[]; };
layout(push_constant) uniform Params { PLAN_FIELDS } p;
#endif
#include "quant_plan.glsl"

#if MINMAX_KERNEL == 1 || MINMAX_KERNEL == 2
// Scale, its inverse and the zero point of channel c.
void affine_params(uint c, out float s, out float inv_s, out float zp) {
  float lo = min(range[c], 0.0), hi = max(range[p.channels + c], 0.0);
  precise float width = (hi - lo) * p.inv_n;
  s = max(width, MIN_SCALE);
  inv_s = 1.0 / s;
  precise float z = -lo * inv_s;
  zp = clamp(round_half_away(z), 0.0, p.n);
}
#endif

void main() {
  Walk it;
  walk_begin(it);
#if MINMAX_KERNEL == 0
  precise float s = max(stat[it.c], MIN_SCALE) * p.inv_qp;
  float inv_s = 1.0 / s;
  for (; walk_valid(it); walk_next(it)) {
    uint i = walk_unit(it);
    VEC xv = x[i], yv = VEC(0.0);
    for (int l = 0; l < VEC_WIDTH; ++l) {
      precise float r = lane(xv, l) * inv_s;
      precise float q = round_half_away(clamp(r, -p.qp, p.qp)) * s;
      set_lane(yv, l, q);
    }
    y[i] = yv;
  }
#elif MINMAX_KERNEL == 1 || MINMAX_KERNEL == 2
  float s, inv_s, zp;
  affine_params(it.c, s, inv_s, zp);
  for (; walk_valid(it); walk_next(it)) {
    uint i = walk_unit(it);
    VEC xv = x[i], out_v = VEC(0.0);
#if MINMAX_KERNEL == 2
    VEC gv = g[i];
#endif
    for (int l = 0; l < VEC_WIDTH; ++l) {
      precise float r = lane(xv, l) * inv_s;
      precise float qi = round_half_away(r) + zp;
#if MINMAX_KERNEL == 1
      precise float q = (clamp(qi, 0.0, p.n) - zp) * s;
      set_lane(out_v, l, q);
#else
      set_lane(out_v, l, qi >= 0.0 && qi <= p.n ? lane(gv, l) : 0.0);
#endif
    }
#if MINMAX_KERNEL == 1
    y[i] = out_v;
#else
    if (p.accumulate != 0u) out_v += dx[i];
    dx[i] = out_v;
#endif
  }
#else
  VEC lo = VEC(uintBitsToFloat(0x7f800000u)), hi = VEC(uintBitsToFloat(0xff800000u));
  for (; walk_valid(it); walk_next(it)) {
    VEC xv = x[walk_unit(it)];
    lo = min(lo, xv);
    hi = max(hi, xv);
  }
#if VEC_WIDTH == 4
  lo.x = min(min(lo.x, lo.y), min(lo.z, lo.w));
  hi.x = max(max(hi.x, hi.y), max(hi.z, hi.w));
#endif
  partials[2u * walk_partial_index()] = lane(lo, 0);
  partials[2u * walk_partial_index() + 1u] = lane(hi, 0);
#endif
}

// LSQ quantizer (src/quant/lsq.h), per tensor or per channel (the plan's channels; a
// per-tensor plan has one). s_c = max(s[c], MIN_SCALE) is the learned step size.
//   forward  r = v * (1 / s_c); vq = round(clamp(r, -Qn, Qp)) * s_c
//   backward dv (+)= g [-Qn <= r <= Qp], and one Kahan partial per invocation of
//            sum g * (round(r) - r inside; -Qn below; Qp above), scaled by the gradient
//            scale gs and merged per channel by quant_reduce_final.
// Define VEC_WIDTH and LSQ_BACKWARD (0/1) before including.
#include "quant_common.glsl"

layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;

layout(std430, binding = 0) readonly buffer Vb { VEC v[]; };
layout(std430, binding = 1) readonly buffer Sb { float s[]; };
#if LSQ_BACKWARD
layout(std430, binding = 2) readonly buffer Gb { VEC g[]; };
layout(std430, binding = 3) buffer DVb { VEC dv[]; };  // read when accumulating
layout(std430, binding = 4) writeonly buffer Partb { float partials[]; };
layout(push_constant) uniform Params { PLAN_FIELDS float qn; float qp; uint accumulate; } p;
#else
layout(std430, binding = 2) writeonly buffer VQb { VEC vq[]; };
layout(push_constant) uniform Params { PLAN_FIELDS float qn; float qp; } p;
#endif
#include "quant_plan.glsl"

void main() {
  Walk it;
  walk_begin(it);
  float step = max(s[it.c], MIN_SCALE);
  float inv_s = 1.0 / step;
  float lo = -p.qn;
#if LSQ_BACKWARD
  VEC sum = VEC(0.0), comp = VEC(0.0);
  for (; walk_valid(it); walk_next(it)) {
    uint i = walk_unit(it);
    VEC vv = v[i], gv = g[i], d = VEC(0.0), term = VEC(0.0);
    for (int l = 0; l < VEC_WIDTH; ++l) {
      precise float r = lane(vv, l) * inv_s;
      float gl = lane(gv, l);
      bool inside = r >= lo && r <= p.qp;
      set_lane(d, l, inside ? gl : 0.0);
      precise float err = round_half_away(r) - r;
      precise float t = gl * (inside ? err : (r < lo ? lo : p.qp));
      set_lane(term, l, t);
    }
    kahan_add(sum, comp, term);
    if (p.accumulate != 0u) d += dv[i];
    dv[i] = d;
  }
  partials[walk_partial_index()] = kahan_total(sum, comp);
#else
  for (; walk_valid(it); walk_next(it)) {
    uint i = walk_unit(it);
    VEC vv = v[i], q = VEC(0.0);
    for (int l = 0; l < VEC_WIDTH; ++l) {
      precise float r = lane(vv, l) * inv_s;
      precise float qv = round_half_away(clamp(r, lo, p.qp)) * step;
      set_lane(q, l, qv);
    }
    vq[i] = q;
  }
#endif
}

// PACT activation quantizer (src/quant/pact.h). alpha = max(alpha[0], MIN_SCALE) is the
// learned clipping level, read from its buffer on every replay.
//   forward  y = clamp(x, 0, alpha); r = y * (n / alpha); yq = round(r) * (alpha * (1/n))
//   backward dx (+)= g [0 <= x < alpha], and one Kahan partial per invocation of
//            sum over x >= alpha of g                                 (original PACT)
//          + sum over x <  alpha of g (round(r) - r) (1/n)            (CG-PACT, `calibrated`)
//            (= g (q(x~/alpha) - x~/alpha) with x~ = max(x, 0)), merged by quant_reduce_final.
// PACT_SIGNED 1: symmetric PACT for inputs that can be negative (a linear bottleneck):
//   forward  r = clamp(x, -alpha, alpha) * (n / alpha), n = 2^(k-1) - 1 (the caller's n)
//   backward dx (+)= g [|x| <= alpha]; partials of sum_{x > alpha} g - sum_{x < -alpha} g
//            (+ CG-PACT's g (round(r) - r) / n inside).
// Define VEC_WIDTH and PACT_BACKWARD (0/1) before including; PACT_SIGNED defaults to 0.
#ifndef PACT_SIGNED
#define PACT_SIGNED 0
#endif
#include "quant_common.glsl"

layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;

layout(std430, binding = 0) readonly buffer Xb { VEC x[]; };
layout(std430, binding = 1) readonly buffer Alphab { float alpha_buf[]; };
#if PACT_BACKWARD
layout(std430, binding = 2) readonly buffer Gb { VEC g[]; };
layout(std430, binding = 3) buffer DXb { VEC dx[]; };  // read when accumulating
layout(std430, binding = 4) writeonly buffer Partb { float partials[]; };
layout(push_constant) uniform Params { PLAN_FIELDS float n; float inv_n; uint accumulate; uint calibrated; } p;
#else
layout(std430, binding = 2) writeonly buffer Yb { VEC y[]; };
layout(push_constant) uniform Params { PLAN_FIELDS float n; float inv_n; } p;
#endif
#include "quant_plan.glsl"
#include "pact_grad.glsl"

void main() {
  Walk it;
  walk_begin(it);
  float alpha = max(alpha_buf[0], MIN_SCALE);
  float scale = p.n / alpha;
#if PACT_BACKWARD
  VEC s = VEC(0.0), comp = VEC(0.0);
  for (; walk_valid(it); walk_next(it)) {
    uint i = walk_unit(it);
    VEC xv = x[i], gv = g[i], d = VEC(0.0), term = VEC(0.0);
    for (int l = 0; l < VEC_WIDTH; ++l) {
      float t;
#if PACT_SIGNED
      set_lane(d, l, pact_signed_grad(lane(xv, l), lane(gv, l), alpha, scale, p.inv_n, p.calibrated != 0u, t));
#else
      set_lane(d, l, pact_grad(lane(xv, l), lane(gv, l), alpha, scale, p.inv_n, p.calibrated != 0u, t));
#endif
      set_lane(term, l, t);
    }
    kahan_add(s, comp, term);
    if (p.accumulate != 0u) d += dx[i];
    dx[i] = d;
  }
  partials[walk_partial_index()] = kahan_total(s, comp);
#else
  float step = alpha * p.inv_n;
  for (; walk_valid(it); walk_next(it)) {
    uint i = walk_unit(it);
    VEC xv = x[i], yv = VEC(0.0);
    for (int l = 0; l < VEC_WIDTH; ++l) {
#if PACT_SIGNED
      precise float r = clamp(lane(xv, l), -alpha, alpha) * scale;
#else
      precise float r = clamp(lane(xv, l), 0.0, alpha) * scale;
#endif
      precise float q = round_half_away(r) * step;
      set_lane(yv, l, q);
    }
    y[i] = yv;
  }
#endif
}

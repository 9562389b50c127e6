// DoReFa activation quantizer (src/quant/dorefa.h), elementwise:
//   forward  y = round(n * clamp(x, 0, 1)) * (1/n)
//   backward dx (+)= g * [0 <= x <= 1]
// Define VEC_WIDTH and DOREFA_BACKWARD (0/1) before including.
#include "quant_common.glsl"

layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;

layout(std430, binding = 0) readonly buffer Xb { VEC x[]; };
#if DOREFA_BACKWARD
layout(std430, binding = 1) readonly buffer Gb { VEC g[]; };
layout(std430, binding = 2) buffer DXb { VEC dx[]; };  // read when accumulating
layout(push_constant) uniform Params { PLAN_FIELDS uint accumulate; } p;
#else
layout(std430, binding = 1) writeonly buffer Yb { VEC y[]; };
layout(push_constant) uniform Params { PLAN_FIELDS float n; float inv_n; } p;
#endif
#include "quant_plan.glsl"

void main() {
  Walk it;
  walk_begin(it);
  for (; walk_valid(it); walk_next(it)) {
    uint i = walk_unit(it);
    VEC xv = x[i];
#if DOREFA_BACKWARD
    VEC gv = g[i], d = VEC(0.0);
    for (int l = 0; l < VEC_WIDTH; ++l) {
      float v = lane(xv, l);
      set_lane(d, l, v >= 0.0 && v <= 1.0 ? lane(gv, l) : 0.0);
    }
    if (p.accumulate != 0u) d += dx[i];
    dx[i] = d;
#else
    VEC yv = VEC(0.0);
    for (int l = 0; l < VEC_WIDTH; ++l) {
      precise float r = clamp(lane(xv, l), 0.0, 1.0) * p.n;
      precise float q = round_half_away(r) * p.inv_n;
      set_lane(yv, l, q);
    }
    y[i] = yv;
#endif
  }
}

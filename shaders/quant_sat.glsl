// SAT weight rescaling (src/quant/sat.h); float elements. stats = [factor, Var[Wq]].
//   SAT_BACKWARD 0: factor = 1 / sqrt(n Var) (1 when Var = 0); w* = wq * factor;
//                   invocation 0 stores factor in stats[0] (the others only read stats[1]).
//   SAT_BACKWARD 1: dwq (+)= dw* * stats[0]  (Var is detached: a constant in backward)
#include "quant_common.glsl"

layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;

#if SAT_BACKWARD
layout(std430, binding = 0) readonly buffer Statsb { float stats[]; };
layout(std430, binding = 1) readonly buffer Gb { float g[]; };
layout(std430, binding = 2) buffer DWb { float dwq[]; };  // read when accumulating
layout(push_constant) uniform Params { PLAN_FIELDS uint accumulate; } p;
#else
layout(std430, binding = 0) readonly buffer WQb { float wq[]; };
layout(std430, binding = 1) buffer Statsb { float stats[]; };  // reads [1], writes [0]
layout(std430, binding = 2) writeonly buffer WSb { float w_star[]; };
layout(push_constant) uniform Params { PLAN_FIELDS float n; } p;
#endif
#include "quant_plan.glsl"

void main() {
  Walk it;
  walk_begin(it);
#if SAT_BACKWARD
  float factor = stats[0];
  for (; walk_valid(it); walk_next(it)) {
    uint i = walk_unit(it);
    float d = g[i] * factor;
    if (p.accumulate != 0u) d += dwq[i];
    dwq[i] = d;
  }
#else
  float var = stats[1];
  float factor = var > 0.0 ? inversesqrt(p.n * var) : 1.0;
  if (gl_GlobalInvocationID.x == 0u) stats[0] = factor;
  for (; walk_valid(it); walk_next(it)) {
    uint i = walk_unit(it);
    w_star[i] = wq[i] * factor;
  }
#endif
}

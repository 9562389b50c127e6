// Partial sums of |x| per channel (src/quant: LSQ step init, binary DoReFa's mean|w|):
// one Kahan partial per invocation, merged by quant_reduce_final. Define VEC_WIDTH.
#include "quant_common.glsl"

layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;

layout(std430, binding = 0) readonly buffer Xb { VEC x[]; };
layout(std430, binding = 1) writeonly buffer Partb { float partials[]; };
layout(push_constant) uniform Params { PLAN_FIELDS } p;
#include "quant_plan.glsl"

void main() {
  Walk it;
  walk_begin(it);
  VEC s = VEC(0.0), comp = VEC(0.0);
  for (; walk_valid(it); walk_next(it)) kahan_add(s, comp, abs(x[walk_unit(it)]));
  partials[walk_partial_index()] = kahan_total(s, comp);
}

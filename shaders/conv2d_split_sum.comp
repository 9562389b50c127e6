#version 450
// dw[i] (+)= sum over z of partial[z][i]: merges the split-K partial sums of a
// backward-weight pass (conv2d_1x1_bwd_weight.comp with SPLITS > 1), in a fixed order.
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;

layout(std430, binding = 0) readonly buffer Pb { float partial[]; };
layout(std430, binding = 1) buffer Dwb { float dw[]; };  // read when accumulating
layout(push_constant) uniform Params { uint count; uint splits; uint accumulate; } p;

void main() {
  uint i = gl_GlobalInvocationID.x;
  if (i >= p.count) return;
  float s = 0.0;
  for (uint z = 0u; z < p.splits; ++z) s += partial[z * p.count + i];
  dw[i] = s + (p.accumulate != 0u ? dw[i] : 0.0);
}

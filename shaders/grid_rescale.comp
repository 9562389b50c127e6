#version 450
// y *= step_a * step_b in place, step = mul * (use ? scale[0] : 1): turns a convolution of grid
// indices (grid_levels.comp) back into values, one rounding after an exact sum (nn/ops/grid.h).
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
layout(constant_id = 3) const uint ITEMS = 4;

layout(std430, binding = 0) buffer Yb { float y[]; };
layout(std430, binding = 1) readonly buffer Ab { float a[]; };  // [1], read if bit 0 of use
layout(std430, binding = 2) readonly buffer Bb { float b[]; };  // [1], read if bit 1 of use
layout(push_constant) uniform Params { uint n; float a_mul; float b_mul; uint use; } p;

void main() {
  precise float sa = (p.use & 1u) != 0u ? p.a_mul * a[0] : p.a_mul;
  precise float sb = (p.use & 2u) != 0u ? p.b_mul * b[0] : p.b_mul;
  precise float s = sa * sb;
  uint i = gl_WorkGroupID.x * ITEMS * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
  for (uint k = 0; k < ITEMS; ++k, i += gl_WorkGroupSize.x) {
    if (i >= p.n) return;
    precise float v = y[i] * s;
    y[i] = v;
  }
}

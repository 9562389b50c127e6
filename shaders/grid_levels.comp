#version 450
// y = roundEven(x / step), step = p.mul * (p.use_scale != 0 ? scale[0] : 1): each value's index
// on a uniform grid through 0 (nn/ops/grid.h). A value that sits on the grid up to float
// rounding becomes its exact integer, so a convolution of such indices sums exactly.
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
layout(constant_id = 3) const uint ITEMS = 4;

layout(std430, binding = 0) readonly buffer Xb { float x[]; };
layout(std430, binding = 1) readonly buffer Sb { float scale[]; };  // [1], read if use_scale
layout(std430, binding = 2) writeonly buffer Yb { float y[]; };
layout(push_constant) uniform Params { uint n; float mul; uint use_scale; } p;

void main() {
  precise float step = p.use_scale != 0u ? p.mul * scale[0] : p.mul;
  precise float inv = step != 0.0 ? 1.0 / step : 0.0;
  uint i = gl_WorkGroupID.x * ITEMS * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
  for (uint k = 0; k < ITEMS; ++k, i += gl_WorkGroupSize.x) {
    if (i >= p.n) return;
    precise float v = x[i] * inv;
    y[i] = roundEven(v);
  }
}

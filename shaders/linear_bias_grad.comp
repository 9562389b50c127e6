#version 450
// db[o] (+)= sum over rows n of dy[n, o]: one invocation per output feature.
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;

layout(std430, binding = 0) readonly buffer DYb { float dy[]; };
layout(std430, binding = 1) buffer DBb { float db[]; };  // read when accumulating

layout(push_constant) uniform Params { uint rows, features, accumulate; } p;

void main() {
  uint o = gl_GlobalInvocationID.x;
  if (o >= p.features) return;
  float s = 0.0;
  for (uint r = 0; r < p.rows; ++r) s += dy[r * p.features + o];
  db[o] = p.accumulate != 0u ? db[o] + s : s;
}

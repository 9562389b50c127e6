#version 450
// Backend self-test kernel: y[i] = a * x[i] + b, plus the global invocation id written to
// ids[i] so tests can see that split dispatches cover every index exactly once.
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
layout(std430, binding = 0) readonly buffer Xb { float x[]; };
layout(std430, binding = 1) writeonly buffer Yb { float y[]; };
layout(std430, binding = 2) writeonly buffer Ib { uint ids[]; };
layout(push_constant) uniform Params { uint n; float a; float b; } p;
layout(constant_id = 3) const float kExtra = 0.0;  // spec-constant plumbing check

void main() {
  uint i = gl_GlobalInvocationID.x;
  if (i >= p.n) return;
  y[i] = p.a * x[i] + p.b + kExtra;
  ids[i] = i;
}

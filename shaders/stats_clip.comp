#version 450
// Clip counts of an activation quantizer's input: counts[0] += #(x >= threshold[0]) (what
// PACT clips to alpha), counts[1] += #(x < 0) (clipped to 0). Integer counts in registers,
// one atomic per invocation: exact and order-independent.
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;

// Bindings 0 and 1 are the same input tensor.
layout(std430, binding = 0) readonly buffer X4b { vec4 x4[]; };
layout(std430, binding = 1) readonly buffer X1b { float x1[]; };
layout(std430, binding = 2) readonly buffer Thb { float threshold[]; };
layout(std430, binding = 3) buffer Countb { uint counts[]; };

layout(push_constant) uniform Params {
  uint n4;           // whole vec4s
  uint n;            // elements
  uint invocations;  // grid stride
} p;

void main() {
  uint gid = gl_GlobalInvocationID.x;
  if (gid >= p.invocations) return;
  float t = threshold[0];
  uint above = 0u, below = 0u;
  for (uint j = gid; j < p.n4; j += p.invocations) {
    vec4 v = x4[j];
    bvec4 a = greaterThanEqual(v, vec4(t)), b = lessThan(v, vec4(0.0));
    above += uint(a.x) + uint(a.y) + uint(a.z) + uint(a.w);
    below += uint(b.x) + uint(b.y) + uint(b.z) + uint(b.w);
  }
  if (gid == 0u) {
    for (uint i = 4u * p.n4; i < p.n; ++i) {
      above += uint(x1[i] >= t);
      below += uint(x1[i] < 0.0);
    }
  }
  if (above != 0u) atomicAdd(counts[0], above);
  if (below != 0u) atomicAdd(counts[1], below);
}

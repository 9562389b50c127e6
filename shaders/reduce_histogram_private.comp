#version 450
// Histogram (same contract as reduce_histogram.comp) for CPU drivers, where every atomic is
// a loop over the SIMD lanes: each invocation counts into its own column of a shared-memory
// table with plain increments; after one barrier the columns are summed and added to the
// global counts.
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
layout(constant_id = 3) const uint SLOTS = 3;  // bins + 2

layout(std430, binding = 0) readonly buffer X4b { vec4 x4[]; };
layout(std430, binding = 1) readonly buffer X1b { float x1[]; };
layout(std430, binding = 2) buffer Countb { uint counts[]; };  // [bins, underflow, overflow]

layout(push_constant) uniform Params {
  uint n4;
  uint n;
  uint bins;
  uint invocations;
  float lo;
  float hi;
  float scale;
} p;

shared uint table[SLOTS * gl_WorkGroupSize.x];  // [slot][invocation]
uint underflow = 0u, overflow = 0u;

void count(float v) {
  precise float t = (v - p.lo) * p.scale;
  // Branch-free. t < 0 exactly when v < lo, and t > bins - 1 when v > hi, so the clamp
  // equals min(uint(t), bins - 1) of the formula in reduce.h (int conversion is native).
  uint bin = min(uint(int(clamp(t, 0.0, float(p.bins - 1u)))), p.bins - 1u);  // min: NaN-safe
  table[bin * gl_WorkGroupSize.x + gl_LocalInvocationID.x] += uint(!isnan(v));
  underflow += uint(v < p.lo);
  overflow += uint(v > p.hi);
}

void main() {
  uint t = gl_LocalInvocationID.x;
  for (uint s = 0; s < SLOTS; ++s) table[s * gl_WorkGroupSize.x + t] = 0u;
  uint gid = gl_GlobalInvocationID.x;
  for (uint j = gid; j < p.n4; j += p.invocations) {
    vec4 v = x4[j];
    count(v.x);
    count(v.y);
    count(v.z);
    count(v.w);
  }
  if (gid == 0u) {
    for (uint i = 4u * p.n4; i < p.n; ++i) count(x1[i]);
  }
  table[p.bins * gl_WorkGroupSize.x + t] += underflow;
  table[(p.bins + 1u) * gl_WorkGroupSize.x + t] += overflow;
  barrier();
  for (uint s = t; s < SLOTS; s += gl_WorkGroupSize.x) {
    uint sum = 0u;
    for (uint k = 0; k < gl_WorkGroupSize.x; ++k) sum += table[s * gl_WorkGroupSize.x + k];
    if (sum != 0u) atomicAdd(counts[s], sum);
  }
}

#version 450
// Histogram of a float tensor: bins over [lo, hi] (outside values clamp into the first / last
// bin and are also counted as underflow / overflow), NaN ignored. Each workgroup counts a
// strided share of the tensor with atomics into shared memory (GPUs), or straight into
// `counts` when the bins do not fit, then adds its counts to the global ones.
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
layout(constant_id = 3) const uint SHARED_SLOTS = 1;  // bins + 2 when counting in shared memory
layout(constant_id = 4) const int USE_SHARED = 1;     // 0: atomics straight into `counts`

// Bindings 0 and 1 are the same input tensor.
layout(std430, binding = 0) readonly buffer X4b { vec4 x4[]; };
layout(std430, binding = 1) readonly buffer X1b { float x1[]; };
layout(std430, binding = 2) buffer Countb { uint counts[]; };  // [bins, underflow, overflow]

layout(push_constant) uniform Params {
  uint n4;           // whole vec4s
  uint n;            // elements
  uint bins;
  uint invocations;  // grid stride
  float lo;
  float hi;
  float scale;       // bins / (hi - lo), computed on the host like ref::histogram
} p;

shared uint hist[SHARED_SLOTS];
uint underflow = 0u, overflow = 0u;

void add(uint slot, uint v) {
  if (USE_SHARED != 0) {
    atomicAdd(hist[slot], v);
  } else {
    atomicAdd(counts[slot], v);
  }
}

void count(float v) {
  precise float t = (v - p.lo) * p.scale;
  // t < 0 exactly when v < lo, and t > bins - 1 when v > hi, so the clamp equals
  // min(uint(t), bins - 1) of the formula in reduce.h; the outer min makes NaN harmless.
  uint bin = min(uint(int(clamp(t, 0.0, float(p.bins - 1u)))), p.bins - 1u);
  if (!isnan(v)) add(bin, 1u);
  underflow += uint(v < p.lo);
  overflow += uint(v > p.hi);
}

void main() {
  uint t = gl_LocalInvocationID.x;
  if (USE_SHARED != 0) {
    for (uint i = t; i < p.bins + 2u; i += gl_WorkGroupSize.x) hist[i] = 0u;
    barrier();
  }
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
  if (underflow != 0u) add(p.bins, underflow);
  if (overflow != 0u) add(p.bins + 1u, overflow);
  if (USE_SHARED != 0) {
    barrier();
    for (uint i = t; i < p.bins + 2u; i += gl_WorkGroupSize.x) {
      uint v = hist[i];
      if (v != 0u) atomicAdd(counts[i], v);
    }
  }
}

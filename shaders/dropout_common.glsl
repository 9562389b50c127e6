// Dropout with a counter-based mask (see src/nn/ops/dropout.h): element e is kept in step t
// when dropout_hash(seed, t, e) >= p.threshold, and then scaled by p.scale = 1 / (1 - p).
// out (+)= kept ? in * scale : 0, for the forward (in = x, out = y) and the backward
// (in = dy, out = dx) alike. The step t is read from a buffer, so a recorded step draws a
// new mask every replay once dropout_advance has bumped it.
// Define VEC_WIDTH (1 or 4) before including; p.n counts VEC elements. Each invocation
// handles ITEMS elements spaced one workgroup apart (as relu_common.glsl).
#if VEC_WIDTH == 4
#define VEC vec4
#define IS_DROPPED(s) equal(s, vec4(0.0))
#else
#define VEC float
#define IS_DROPPED(s) ((s) == 0.0)
#endif
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
layout(constant_id = 3) const uint ITEMS = 4;

layout(std430, binding = 0) readonly buffer Stepb { uint step[]; };
layout(std430, binding = 1) readonly buffer Inb { VEC src[]; };
layout(std430, binding = 2) buffer Outb { VEC dst[]; };  // read when accumulating
// Must match DropoutPush in src/nn/ops/dropout.cpp.
layout(push_constant) uniform Params { uint n, seed, threshold; float scale; uint accumulate; } p;

// The PCG output permutation as a hash (Jarzynski & Olano, "Hash functions for GPU rendering",
// 2020); dropout_hash in dropout.cpp is the same on the CPU.
uint pcg(uint v) {
  uint state = v * 747796405u + 2891336453u;
  uint word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
  return (word >> 22u) ^ word;
}

float keep_scale(uint key, uint e) { return pcg(e + key) >= p.threshold ? p.scale : 0.0; }

void main() {
  const uint key = pcg(step[0] + pcg(p.seed));
  uint i = gl_WorkGroupID.x * ITEMS * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
  for (uint k = 0; k < ITEMS; ++k, i += gl_WorkGroupSize.x) {
    if (i >= p.n) return;
#if VEC_WIDTH == 4
    const uint e = 4u * i;
    const vec4 s = vec4(keep_scale(key, e), keep_scale(key, e + 1u), keep_scale(key, e + 2u), keep_scale(key, e + 3u));
#else
    const float s = keep_scale(key, i);
#endif
    // A select, not a product: a dropped inf or NaN gives 0, not NaN.
    const VEC g = mix(src[i] * s, VEC(0.0), IS_DROPPED(s));
    dst[i] = p.accumulate != 0u ? dst[i] + g : g;
  }
}

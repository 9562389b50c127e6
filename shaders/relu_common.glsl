// ReLU forward and backward, written once for float and vec4 elements (the host picks vec4 when
// the element count allows: CPU drivers pay per load instruction, so vec4 moves 4x the data
// per instruction). p.n counts VEC elements. Each invocation handles ITEMS elements spaced
// one workgroup apart, so neighbouring invocations touch neighbouring memory.
// Define VEC_WIDTH (1 or 4) and RELU_BACKWARD (0: y = relu(x); 1: dx (+)= dy * [t > 0])
// before including; define RELU_CAP (6.0) for ReLU6: y = min(max(x, 0), cap),
// dx (+)= dy * [0 < t < cap] (0 at exactly 0 and cap, like torch's hardtanh_backward).
#if VEC_WIDTH == 4
#define VEC vec4
#define IS_POSITIVE(v) greaterThan(v, vec4(0.0))
#define IS_NEGATIVE(v) lessThan(v, vec4(0.0))
#define AT_LEAST(v, c) greaterThanEqual(v, vec4(c))
#define IS_NAN(v) isnan(v)
#else
#define VEC float
#define IS_POSITIVE(v) ((v) > 0.0)
#define IS_NEGATIVE(v) ((v) < 0.0)
#define AT_LEAST(v, c) ((v) >= (c))
#define IS_NAN(v) isnan(v)
#endif
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
layout(constant_id = 3) const uint ITEMS = 4;

#if RELU_BACKWARD
// t is the forward input or output: both give the same mask.
layout(std430, binding = 0) readonly buffer Tb { VEC t[]; };
layout(std430, binding = 1) readonly buffer DYb { VEC dy[]; };
layout(std430, binding = 2) buffer DXb { VEC dx[]; };  // read when accumulating
layout(push_constant) uniform Params { uint n; uint accumulate; } p;
#else
layout(std430, binding = 0) readonly buffer Xb { VEC x[]; };
layout(std430, binding = 1) writeonly buffer Yb { VEC y[]; };
layout(push_constant) uniform Params { uint n; } p;
#endif

void main() {
  uint i = gl_WorkGroupID.x * ITEMS * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
  for (uint k = 0; k < ITEMS; ++k, i += gl_WorkGroupSize.x) {
    if (i >= p.n) return;
#if RELU_BACKWARD
    VEC g = mix(VEC(0.0), dy[i], IS_POSITIVE(t[i]));
#ifdef RELU_CAP
    g = mix(g, VEC(0.0), AT_LEAST(t[i], RELU_CAP));
#endif
    dx[i] = p.accumulate != 0u ? dx[i] + g : g;
#else
    VEC v = x[i];
#ifdef RELU_CAP
    // clamp of a NaN is undefined in GLSL: pick the NaN explicitly, like torch.
    y[i] = mix(clamp(v, VEC(0.0), VEC(RELU_CAP)), v, IS_NAN(v));
#else
    y[i] = mix(v, VEC(0.0), IS_NEGATIVE(v));  // NaN propagates, like torch.relu
#endif
#endif
  }
}

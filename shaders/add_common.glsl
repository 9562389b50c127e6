// Elementwise add family, written once for float and vec4 elements (the host picks vec4 when
// the element count allows: CPU drivers pay per load instruction). p.n counts VEC elements.
// Each invocation handles ITEMS elements spaced one workgroup apart.
// Define VEC_WIDTH (1 or 4) and ADD_OP before including:
//   ADD_FORWARD:    y = a + b, or relu(a + b) (p.relu: the residual join of a block)
//   ADD_BACKWARD:   da (+)= dy, db (+)= dy (one pass over dy)
//   ADD_ACCUMULATE: dst += scale * src
#define ADD_FORWARD 0
#define ADD_BACKWARD 1
#define ADD_ACCUMULATE 2
#if VEC_WIDTH == 4
#define VEC vec4
#else
#define VEC float
#endif
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
layout(constant_id = 3) const uint ITEMS = 4;

#if ADD_OP == ADD_FORWARD
layout(std430, binding = 0) readonly buffer Ab { VEC a[]; };
layout(std430, binding = 1) readonly buffer Bb { VEC b[]; };
layout(std430, binding = 2) writeonly buffer Yb { VEC y[]; };
layout(push_constant) uniform Params { uint n; uint relu; } p;
#elif ADD_OP == ADD_BACKWARD
layout(std430, binding = 0) readonly buffer DYb { VEC dy[]; };
layout(std430, binding = 1) buffer DAb { VEC da[]; };  // read when accumulating
layout(std430, binding = 2) buffer DBb { VEC db[]; };
layout(push_constant) uniform Params { uint n; uint accumulate_a; uint accumulate_b; } p;
#else
layout(std430, binding = 0) readonly buffer Sb { VEC src[]; };
layout(std430, binding = 1) buffer Db { VEC dst[]; };
layout(push_constant) uniform Params { uint n; float scale; } p;
#endif

void main() {
  uint i = gl_WorkGroupID.x * ITEMS * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
  for (uint k = 0; k < ITEMS; ++k, i += gl_WorkGroupSize.x) {
    if (i >= p.n) return;
#if ADD_OP == ADD_FORWARD
    VEC v = a[i] + b[i];
    y[i] = p.relu != 0u ? max(v, VEC(0.0)) : v;
#elif ADD_OP == ADD_BACKWARD
    VEC g = dy[i];
    da[i] = p.accumulate_a != 0u ? da[i] + g : g;
    db[i] = p.accumulate_b != 0u ? db[i] + g : g;
#else
    dst[i] += p.scale * src[i];
#endif
  }
}

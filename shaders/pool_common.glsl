// Pooling kernels. Each exists for float elements (any size) and for vec4 elements (the host
// picks vec4 when H*W % 4 == 0, or W % 4 == 0 for max pool: CPU drivers pay per load
// instruction, so vec4 is several times faster there).
// Define VEC_WIDTH (1 or 4) and POOL_KERNEL before including:
//   GAVG:     y[n, c] = mean of plane (n, c); one invocation per plane.
//   GAVG_BWD: dx[n, c, h, w] (+)= dy[n, c] / (H*W); ITEMS elements per invocation, one
//             workgroup apart, each tracking its plane without dividing per element.
//   MAX:      max pool 2x2 stride 2, floor mode (an odd last row/column is dropped, like
//             PyTorch); one invocation per output row.
//   MAX_BWD:  dx gets dy at each window's argmax (recomputed from x), 0 elsewhere and in
//             dropped rows/columns; one invocation per pair of dx rows.
// Max pool ties: the first maximum in row-major window order wins; a NaN always wins
// (PyTorch's CPU rule).
#define GAVG 0
#define GAVG_BWD 1
#define MAX 2
#define MAX_BWD 3
#if VEC_WIDTH == 4
#define VEC vec4
#else
#define VEC float
#endif
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
layout(constant_id = 3) const uint ITEMS = 4;  // GAVG_BWD

// Sizes in floats; kernels convert to their element width.
layout(push_constant) uniform Params { uint planes, h, w, ho, wo, accumulate; } p;

bool takes(float v, float m) { return v > m || isnan(v); }

// Index (0..3) of the maximum of a window given as (top-left, top-right, bottom-left, bottom-right).
uint window_argmax(vec4 win) {
  uint best = 0u;
  float m = win.x;
  if (takes(win.y, m)) { m = win.y; best = 1u; }
  if (takes(win.z, m)) { m = win.z; best = 2u; }
  if (takes(win.w, m)) { best = 3u; }
  return best;
}

float window_max(vec4 win) { return win[window_argmax(win)]; }

// Gradient of each window element: dy at the argmax, 0 elsewhere.
vec4 window_grad(vec4 win, float g) {
  uint best = window_argmax(win);
  return vec4(best == 0u ? g : 0.0, best == 1u ? g : 0.0, best == 2u ? g : 0.0, best == 3u ? g : 0.0);
}

#if POOL_KERNEL == GAVG
layout(std430, binding = 0) readonly buffer Xb { VEC x[]; };
layout(std430, binding = 1) writeonly buffer Yb { float y[]; };

void main() {
  uint plane = gl_GlobalInvocationID.x;
  if (plane >= p.planes) return;
  uint hw = p.h * p.w / VEC_WIDTH, base = plane * hw;
  VEC acc = VEC(0.0);
  for (uint i = 0; i < hw; ++i) acc += x[base + i];
#if VEC_WIDTH == 4
  float s = (acc.x + acc.y) + (acc.z + acc.w);
#else
  float s = acc;
#endif
  y[plane] = s / float(p.h * p.w);
}

#elif POOL_KERNEL == GAVG_BWD
layout(std430, binding = 0) readonly buffer DYb { float dy[]; };
layout(std430, binding = 1) buffer DXb { VEC dx[]; };  // read when accumulating

void main() {
  uint hw = p.h * p.w / VEC_WIDTH, n = p.planes * hw, step = gl_WorkGroupSize.x;
  uint j = gl_WorkGroupID.x * ITEMS * step + gl_LocalInvocationID.x;
  uint plane = j / hw, i = j - plane * hw;
  uint step_plane = step / hw, step_i = step - step_plane * hw;
  float inv_hw = 1.0 / float(p.h * p.w);
  for (uint k = 0; k < ITEMS && j < n; ++k) {
    VEC g = VEC(dy[plane] * inv_hw);
    dx[j] = p.accumulate != 0u ? dx[j] + g : g;
    j += step;
    i += step_i;
    plane += step_plane;
    if (i >= hw) {
      i -= hw;
      ++plane;
    }
  }
}

#elif POOL_KERNEL == MAX && VEC_WIDTH == 1
layout(std430, binding = 0) readonly buffer Xb { float x[]; };
layout(std430, binding = 1) writeonly buffer Yb { float y[]; };

void main() {
  uint row = gl_GlobalInvocationID.x;
  if (row >= p.planes * p.ho) return;
  uint plane = row / p.ho, oh = row - plane * p.ho;
  uint top = (plane * p.h + 2u * oh) * p.w;
  for (uint ow = 0; ow < p.wo; ++ow) {
    uint a = top + 2u * ow;
    y[row * p.wo + ow] = window_max(vec4(x[a], x[a + 1u], x[a + p.w], x[a + p.w + 1u]));
  }
}

#elif POOL_KERNEL == MAX
// vec4: W % 4 == 0; one vec4 of the top and the bottom row covers two windows.
layout(std430, binding = 0) readonly buffer Xb { vec4 x[]; };
layout(std430, binding = 1) writeonly buffer Yb { vec2 y[]; };

void main() {
  uint row = gl_GlobalInvocationID.x;
  if (row >= p.planes * p.ho) return;
  uint plane = row / p.ho, oh = row - plane * p.ho;
  uint w4 = p.w / 4u, top = (plane * p.h + 2u * oh) * w4;
  for (uint q = 0; q < w4; ++q) {
    vec4 t = x[top + q], b = x[top + w4 + q];
    y[row * w4 + q] = vec2(window_max(vec4(t.xy, b.xy)), window_max(vec4(t.zw, b.zw)));
  }
}

#elif POOL_KERNEL == MAX_BWD && VEC_WIDTH == 1
layout(std430, binding = 0) readonly buffer Xb { float x[]; };
layout(std430, binding = 1) readonly buffer DYb { float dy[]; };
layout(std430, binding = 2) buffer DXb { float dx[]; };  // read when accumulating

void store(uint addr, float g) { dx[addr] = p.accumulate != 0u ? dx[addr] + g : g; }

void main() {
  uint hp = (p.h + 1u) / 2u, wp = (p.w + 1u) / 2u;
  uint pair = gl_GlobalInvocationID.x;
  if (pair >= p.planes * hp) return;
  uint plane = pair / hp, r = pair - plane * hp;
  uint top = (plane * p.h + 2u * r) * p.w;
  bool has_second_row = 2u * r + 1u < p.h;
  for (uint cp = 0; cp < wp; ++cp) {
    uint a = top + 2u * cp;
    bool has_second_col = 2u * cp + 1u < p.w;
    vec4 g = vec4(0.0);  // (top-left, top-right, bottom-left, bottom-right)
    if (r < p.ho && cp < p.wo)
      g = window_grad(vec4(x[a], x[a + 1u], x[a + p.w], x[a + p.w + 1u]), dy[(plane * p.ho + r) * p.wo + cp]);
    store(a, g.x);
    if (has_second_col) store(a + 1u, g.y);
    if (has_second_row) {
      store(a + p.w, g.z);
      if (has_second_col) store(a + p.w + 1u, g.w);
    }
  }
}

#else
// vec4: W % 4 == 0 (no dropped column); a vec4 of each row covers two windows.
layout(std430, binding = 0) readonly buffer Xb { vec4 x[]; };
layout(std430, binding = 1) readonly buffer DYb { vec2 dy[]; };
layout(std430, binding = 2) buffer DXb { vec4 dx[]; };  // read when accumulating

void store(uint addr, vec4 g) { dx[addr] = p.accumulate != 0u ? dx[addr] + g : g; }

void main() {
  uint hp = (p.h + 1u) / 2u;
  uint pair = gl_GlobalInvocationID.x;
  if (pair >= p.planes * hp) return;
  uint plane = pair / hp, r = pair - plane * hp;
  uint w4 = p.w / 4u, top = (plane * p.h + 2u * r) * w4;
  if (r == p.ho) {  // the odd last row, dropped by the forward: only one row, gradient 0
    for (uint q = 0; q < w4; ++q) store(top + q, vec4(0.0));
    return;
  }
  for (uint q = 0; q < w4; ++q) {
    vec4 t = x[top + q], b = x[top + w4 + q];
    vec2 d = dy[(plane * p.ho + r) * w4 + q];
    vec4 g0 = window_grad(vec4(t.xy, b.xy), d.x), g1 = window_grad(vec4(t.zw, b.zw), d.y);
    store(top + q, vec4(g0.xy, g1.xy));
    store(top + w4 + q, vec4(g0.zw, g1.zw));
  }
}
#endif

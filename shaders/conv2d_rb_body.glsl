// Register-blocked implicit-GEMM convolution for CPU drivers (lavapipe). Included by
// conv2d_fwd_rb.comp (BWD_DATA 0: y = conv(x, w)) and conv2d_bwd_data_rb.comp (BWD_DATA 1:
// dx = conv_transpose(dy, w)). Roles: "in" is the tensor read through windows (x or dy),
// "out" the tensor written (y or dx). Each invocation computes MB out channels x R rows x NB
// columns in registers, looping over the in channels CG at a time; no shared memory, no
// barriers. What makes it fast on llvmpipe, where every buffer load is a scalar loop over
// the SIMD lanes (uniform or not) and cross-lane shuffles with constant lane indices are
// nearly free:
//  - the weights of a step are loaded once per subgroup (each of WL lanes loads a share,
//    vec4 where aligned) and handed to every lane with subgroupShuffle;
//  - input rows are read as vec4s; with XCHG each lane loads only its own aligned 4 columns
//    and takes the halo from its neighbours' chunks (end lanes load one extra chunk);
//  - all block loops are unrolled ([[unroll]] + specialization constants), so every
//    register array index is a compile-time constant.
// Backward-data tiles start at multiples of the stride, so which taps reach an out pixel
// of the tile, and which window position they read, are compile-time constants: a strided
// backward pass does only the multiply-adds that exist and stores contiguous rows.
#extension GL_EXT_control_flow_attributes : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_shuffle : require
#include "conv2d_common.glsl"

layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
layout(constant_id = 3) const int MB = 16;   // out channels per invocation (multiple of 4)
layout(constant_id = 4) const int NB = 4;    // out columns per invocation
layout(constant_id = 5) const int R = 4;     // out rows per invocation
layout(constant_id = 6) const int KH = 3;
layout(constant_id = 7) const int KW = 3;
layout(constant_id = 8) const int S = 1;     // stride of the forward convolution
layout(constant_id = 9) const int PH = 1;    // padding of the forward convolution
layout(constant_id = 10) const int PW = 1;
layout(constant_id = 11) const int CG = 4;   // in channels per step (1 or 4)
layout(constant_id = 12) const int VEC = 1;  // weight runs are vec4-aligned
layout(constant_id = 13) const int WL = 8;   // lanes sharing weight loads (subgroup size; 1: none)
layout(constant_id = 14) const int XCHG = 0; // neighbour lanes exchange aligned input chunks

const int KK = KH * KW;
// Window walked by one invocation. Forward: out (r, j) with tap (kh, kw) reads window
// (r*S + kh, j*S + kw). Backward-data: out (r, j) of a stride-aligned tile takes tap kh
// when (r + PH - kh) % S == 0, reading dy row (r + PH - kh) / S relative to the tile's
// first dy row; DR0/DC0 is the lowest such offset over all taps (floor division).
const int DR0 = (PH - KH + 1 + S * KH) / S - KH;
const int DC0 = (PW - KW + 1 + S * KW) / S - KW;
const int XR = BWD_DATA == 1 ? (R - 1 + PH + S * KH) / S - KH - DR0 + 1 : (R - 1) * S + KH;
const int XW = BWD_DATA == 1 ? (NB - 1 + PW + S * KW) / S - KW - DC0 + 1 : (NB - 1) * S + KW;
const int NQ = (XW + 6) / 4;                                 // vec4s covering XW floats
const int XPAD = BWD_DATA == 1 ? -DC0 : PW;                  // window start left of the own chunk (XCHG)
// Weights of one step: RUNS contiguous runs of RL floats (fwd: one per out channel,
// bwd-data: one per in channel), loaded in units of U floats.
const int RUNS = BWD_DATA == 1 ? CG : MB;
const int RL = BWD_DATA == 1 ? MB * KK : CG * KK;
const int U = VEC == 1 ? 4 : 1;
const int NU = RUNS * RL / U;
const int LU = (NU + WL - 1) / WL;                           // units each lane loads

// Does tap kh (kw) reach out row r (column j) of the tile, and which window row (column)
// does it read?
bool row_hit(int r, int kh) { return BWD_DATA == 0 || (r + PH - kh + S * KH) % S == 0; }
bool col_hit(int j, int kw) { return BWD_DATA == 0 || (j + PW - kw + S * KW) % S == 0; }
int window_row(int r, int kh) { return BWD_DATA == 1 ? (r + PH - kh + S * KH) / S - KH - DR0 : r * S + kh; }
int window_col(int j, int kw) { return BWD_DATA == 1 ? (j + PW - kw + S * KW) / S - KW - DC0 : j * S + kw; }

layout(std430, binding = 0) readonly buffer In4 { vec4 in4[]; };
layout(std430, binding = 1) readonly buffer Wb { float wf[]; };
layout(std430, binding = 2) readonly buffer W4b { vec4 w4[]; };

int IC, IH, IW, OC, OH, OW;  // in / out tensor shapes (out: of the whole tensor)

float weight_unit(vec4 loaded[LU], int idx) {
  const int u = idx / U;
  vec4 v = WL > 1 ? subgroupShuffle(loaded[u / WL], u % WL) : loaded[u / WL];
  return v[idx % U];
}

// Weight of out channel m, in channel cc of the step and (forward-orientation) tap (kh, kw).
float weight(vec4 loaded[LU], int m, int cc, int kh, int kw) {
  if (BWD_DATA == 1) return weight_unit(loaded, cc * RL + m * KK + kh * KW + kw);
  return weight_unit(loaded, m * RL + cc * KK + kh * KW + kw);
}

void main() {
  if (BWD_DATA == 1) {
    IC = p.c_out; IH = p.oh; IW = p.ow; OC = p.c_in; OH = p.h; OW = p.w;
  } else {
    IC = p.c_in; IH = p.h; IW = p.w; OC = p.c_out; OH = p.oh; OW = p.ow;
  }
  const int col_blocks = (OW + NB - 1) / NB, row_blocks = (OH + R - 1) / R;
  const int total = p.n * row_blocks * col_blocks;
  // Out-of-range invocations compute a clamped block (they take part in the shuffles)
  // but store nothing.
  const bool in_range = int(gl_GlobalInvocationID.x) < total;
  const int gid = min(int(gl_GlobalInvocationID.x), total - 1);
  const int q0 = (gid % col_blocks) * NB;
  const int r0 = ((gid / col_blocks) % row_blocks) * R;
  const int n = gid / (col_blocks * row_blocks);
  const int o0 = int(gl_WorkGroupID.y) * MB;
  const int lane = int(gl_SubgroupInvocationID);

  // Top-left of the input window (bwd-data tiles start at multiples of S).
  const int in_row0 = BWD_DATA == 1 ? r0 / S + DR0 : r0 * S - PH;
  const int in_col0 = BWD_DATA == 1 ? q0 / S + DC0 : q0 * S - PW;
  bool col_ok[XW];
  [[unroll]] for (int t = 0; t < XW; ++t) col_ok[t] = in_col0 + t >= 0 && in_col0 + t < IW;
  int row_at[XR];
  bool row_ok[XR];
  [[unroll]] for (int t = 0; t < XR; ++t) {
    row_ok[t] = in_row0 + t >= 0 && in_row0 + t < IH;
    row_at[t] = clamp(in_row0 + t, 0, IH - 1) * IW + in_col0;
  }
  const int last_q = (p.n * IC * IH * IW + 3) / 4 - 1;
  const int last_wq = (p.c_out * p.c_in * KK + 3) / 4 - 1;

  float acc[MB * R * NB];
  [[unroll]] for (int i = 0; i < MB * R * NB; ++i) acc[i] = 0.0;

  for (int c0 = 0; c0 < IC; c0 += CG) {
    // Input windows of the CG channels, zero outside the image.
    float xr[CG * XR * XW];
    [[unroll]] for (int cc = 0; cc < CG; ++cc) {
      const int plane = (n * IC + c0 + cc) * IH * IW;
      [[unroll]] for (int rr = 0; rr < XR; ++rr) {
        const int f = plane + row_at[rr];
        float seg[12];
        if (XCHG == 1) {
          // Own chunk: columns [q0, q0 + 4) of the row, 16-byte aligned.
          const int q = min((f + XPAD) >> 2, last_q);
          const vec4 own = in4[q];
          vec4 halo = vec4(0.0);
          if (lane == 0 || lane == gl_SubgroupSize - 1)
            halo = in4[clamp(lane == 0 ? q - 1 : q + 1, 0, last_q)];
          vec4 left = subgroupShuffle(own, max(lane - 1, 0));
          vec4 right = subgroupShuffle(own, min(lane + 1, int(gl_SubgroupSize) - 1));
          if (lane == 0) left = halo;
          if (lane == gl_SubgroupSize - 1) right = halo;
          seg = float[12](left.x, left.y, left.z, left.w, own.x, own.y, own.z, own.w,
                          right.x, right.y, right.z, right.w);
        }
        // Otherwise: the NQ aligned vec4s around the window, which starts sh floats in.
        float xs[4 * NQ];
        const int sh = f & 3;
        if (XCHG == 0) {
          [[unroll]] for (int k = 0; k < NQ; ++k) {
            const vec4 v = in4[clamp((f >> 2) + k, 0, last_q)];
            xs[4 * k] = v.x; xs[4 * k + 1] = v.y; xs[4 * k + 2] = v.z; xs[4 * k + 3] = v.w;
          }
        }
        [[unroll]] for (int t = 0; t < XW; ++t) {
          float v;
          if (XCHG == 1) v = seg[4 - XPAD + t];
          else v = sh == 0 ? xs[t] : sh == 1 ? xs[t + 1] : sh == 2 ? xs[t + 2] : xs[t + 3];
          xr[(cc * XR + rr) * XW + t] = (row_ok[rr] && col_ok[t]) ? v : 0.0;
        }
      }
    }

    // This step's weights: each of WL lanes loads its share of units.
    vec4 loaded[LU];
    [[unroll]] for (int i = 0; i < LU; ++i) {
      const int u = min((WL > 1 ? lane % WL : 0) + i * WL, NU - 1);
      const int run = u / (RL / U), off = u % (RL / U);
      const int start = BWD_DATA == 1 ? ((c0 + run) * OC + o0) * KK : (min(o0 + run, OC - 1) * IC + c0) * KK;
      if (VEC == 1) loaded[i] = w4[min(start / 4 + off, last_wq)];
      else loaded[i] = vec4(wf[min(start + off, p.c_out * p.c_in * KK - 1)]);
    }

    // Loop order keeps each shuffled weight unit live briefly: its run is the outer index.
    [[unroll]] for (int outer = 0; outer < RUNS; ++outer)
      [[unroll]] for (int inner = 0; inner < MB * CG / RUNS; ++inner)
        [[unroll]] for (int kh = 0; kh < KH; ++kh)
          [[unroll]] for (int kw = 0; kw < KW; ++kw) {
            const int m = BWD_DATA == 1 ? inner : outer, cc = BWD_DATA == 1 ? outer : inner;
            const float wv = weight(loaded, m, cc, kh, kw);
            [[unroll]] for (int r = 0; r < R; ++r)
              [[unroll]] for (int j = 0; j < NB; ++j)
                if (row_hit(r, kh) && col_hit(j, kw))
                  acc[(m * R + r) * NB + j] += wv * xr[(cc * XR + window_row(r, kh)) * XW + window_col(j, kw)];
          }
  }

  if (!in_range) return;
  [[unroll]] for (int m = 0; m < MB; ++m)
    [[unroll]] for (int r = 0; r < R; ++r) {
      if (o0 + m >= OC || r0 + r >= OH) continue;
      const int obase = ((n * OC + o0 + m) * OH + r0 + r) * OW + q0;
      if (NB % 4 == 0 && OW % 4 == 0) {
        [[unroll]] for (int j = 0; j < NB; j += 4) {
          if (q0 + j >= OW) continue;
          const int i = (m * R + r) * NB + j;
          vec4 v = vec4(acc[i], acc[i + 1], acc[i + 2], acc[i + 3]);
#if BWD_DATA == 1
          if (p.accumulate != 0) v += out4[(obase + j) / 4];
#endif
          out4[(obase + j) / 4] = v;
        }
      } else {
        [[unroll]] for (int j = 0; j < NB; ++j) {
          if (q0 + j >= OW) continue;
          float v = acc[(m * R + r) * NB + j];
#if BWD_DATA == 1
          if (p.accumulate != 0) v += outf[obase + j];
#endif
          outf[obase + j] = v;
        }
      }
    }
}

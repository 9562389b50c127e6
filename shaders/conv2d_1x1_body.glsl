// 1x1 convolution (pad 0) as a GEMM per image, register-blocked for CPU drivers. Included by
// conv2d_1x1_fwd.comp (BWD_DATA 0) and conv2d_1x1_bwd_data.comp (BWD_DATA 1):
//   out[n][m][p] = sum_k A[m][k] * B[n][k][p]
// forward:       A = w (m = o, k = c), B = x read at the pixel under y pixel p, out = y;
// backward-data: A = w^T (m = c, k = o), B = dy, out = dx at the pixel under dy pixel p
//                (with stride > 1 the host zero-fills dx first unless accumulating).
// Each invocation keeps MB out channels x NP consecutive pixels of one image in registers
// and walks k four at a time; no shared memory, no barriers. On llvmpipe every buffer load
// is a scalar loop over the SIMD lanes, so per step each lane does NP/4 vec4 loads per k
// of B and loads only its share of the 4 x MB weights, which subgroupShuffle hands round
// (all lanes of a subgroup use the same weights). All block loops are unrolled so the
// register arrays are indexed by constants.
// Pixel blocks: p runs over the whole plane (one "row" of oh*ow pixels) except for the
// strided forward pass, which blocks along each output row so that the x window of a block
// is one contiguous run of (NP - 1) * S + 1 floats.
#extension GL_EXT_control_flow_attributes : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_shuffle : require
#include "conv2d_common.glsl"

layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
layout(constant_id = 3) const int MB = 16;       // out channels per invocation (multiple of 4)
layout(constant_id = 4) const int NP = 8;        // pixels per invocation (multiple of 4)
layout(constant_id = 5) const int S = 1;         // stride
layout(constant_id = 6) const int B_ALIGNED = 1; // every B window starts 16-byte aligned
layout(constant_id = 7) const int O_ALIGNED = 1; // out runs are contiguous and 16-byte aligned
layout(constant_id = 8) const int W_VEC = 1;     // weight runs are 16-byte aligned (c_in % 4 == 0)
layout(constant_id = 9) const int WL = 8;        // lanes sharing weight loads (1: none)

const int KG = 4;                                 // k per step
const bool ROWS = BWD_DATA == 0 && S > 1;         // blocks along output rows
const int BS = ROWS ? S : 1;                      // B pixel step inside a window
const int XW = (NP - 1) * BS + 1;                 // floats of one B window
const int NQ = B_ALIGNED == 1 ? (XW + 3) / 4 : (XW + 6) / 4;
// Weights of a step: RUNS contiguous runs of RL floats (forward: one run of 4 c per out
// channel; backward-data: one run of MB c per o), loaded in units of U floats.
const int RUNS = BWD_DATA == 1 ? KG : MB;
const int RL = BWD_DATA == 1 ? MB : KG;
const int U = W_VEC == 1 ? 4 : 1;
const int NU = RUNS * RL / U;
const int LU = (NU + WL - 1) / WL;                // units each lane loads

layout(std430, binding = 0) readonly buffer B4b { vec4 b4[]; };
layout(std430, binding = 1) readonly buffer Wb { float wf[]; };
layout(std430, binding = 2) readonly buffer W4b { vec4 w4[]; };

float weight(vec4 loaded[LU], int m, int kk) {
  const int idx = BWD_DATA == 1 ? kk * MB + m : m * KG + kk;
  const int u = idx / U;
  const vec4 v = WL > 1 ? subgroupShuffle(loaded[u / WL], u % WL) : loaded[u / WL];
  return v[idx % U];
}

void main() {
  // GEMM sizes and the B / out planes.
  const int M = BWD_DATA == 1 ? p.c_in : p.c_out, K = BWD_DATA == 1 ? p.c_out : p.c_in;
  const int in_hw = p.h * p.w, out_hw = p.oh * p.ow;
  const int b_plane = BWD_DATA == 1 ? out_hw : in_hw;
  const int o_plane = BWD_DATA == 1 ? in_hw : out_hw;
  const int rows = ROWS ? p.oh : 1, cols = ROWS ? p.ow : out_hw;
  const int col_blocks = (cols + NP - 1) / NP;
  const int total = p.n * rows * col_blocks;
  // Out-of-range invocations compute a clamped block (they take part in the shuffles)
  // but store nothing.
  const bool in_range = int(gl_GlobalInvocationID.x) < total;
  const int gid = min(int(gl_GlobalInvocationID.x), total - 1);
  const int j0 = (gid % col_blocks) * NP;
  const int r = (gid / col_blocks) % rows;
  const int n = gid / (col_blocks * rows);
  const int o0 = int(gl_WorkGroupID.y) * MB;
  const int lane = int(gl_SubgroupInvocationID);

  // B window of this block inside its plane.
  const int b_off = BWD_DATA == 1 ? j0 : (ROWS ? r * S * p.w + j0 * S : j0);
  const int last_q = (p.n * K * b_plane + 3) / 4 - 1;
  const int w_numel = p.c_out * p.c_in;
  const int last_wq = (w_numel + 3) / 4 - 1;

  float acc[MB * NP];
  [[unroll]] for (int i = 0; i < MB * NP; ++i) acc[i] = 0.0;

  for (int k0 = 0; k0 < K; k0 += KG) {
    // B rows of the KG channels (clamped: a channel past K gets weight 0 below).
    float b[KG * NP];
    [[unroll]] for (int kk = 0; kk < KG; ++kk) {
      const int f = (n * K + min(k0 + kk, K - 1)) * b_plane + b_off;
      float xs[4 * NQ];
      [[unroll]] for (int q = 0; q < NQ; ++q) {
        const vec4 v = b4[min((f >> 2) + q, last_q)];
        xs[4 * q] = v.x; xs[4 * q + 1] = v.y; xs[4 * q + 2] = v.z; xs[4 * q + 3] = v.w;
      }
      const int sh = B_ALIGNED == 1 ? 0 : f & 3;
      [[unroll]] for (int j = 0; j < NP; ++j) {
        const int t = j * BS;
        b[kk * NP + j] = B_ALIGNED == 1 ? xs[t]
                       : sh == 0 ? xs[t] : sh == 1 ? xs[t + 1] : sh == 2 ? xs[t + 2] : xs[t + 3];
      }
    }

    // This step's weights: each of WL lanes loads its share of units.
    vec4 loaded[LU];
    [[unroll]] for (int i = 0; i < LU; ++i) {
      const int u = min((WL > 1 ? lane % WL : 0) + i * WL, NU - 1);
      const int run = u / (RL / U), off = u % (RL / U);
      const int start = BWD_DATA == 1 ? min(k0 + run, K - 1) * M + o0 : min(o0 + run, M - 1) * K + k0;
      if (W_VEC == 1) loaded[i] = w4[min(start / 4 + off, last_wq)];
      else loaded[i] = vec4(wf[min(start + off, w_numel - 1)]);
    }

    [[unroll]] for (int kk = 0; kk < KG; ++kk) {
      const bool k_ok = k0 + kk < K;
      [[unroll]] for (int m = 0; m < MB; ++m) {
        const float wv = k_ok ? weight(loaded, m, kk) : 0.0;
        [[unroll]] for (int j = 0; j < NP; ++j) acc[m * NP + j] += wv * b[kk * NP + j];
      }
    }
  }

  if (!in_range) return;
  [[unroll]] for (int m = 0; m < MB; ++m) {
    if (o0 + m >= M) continue;
    const int plane = (n * M + o0 + m) * o_plane;
    if (O_ALIGNED == 1) {
      const int obase = plane + r * p.ow + j0;
      [[unroll]] for (int j = 0; j < NP; j += 4) {
        if (j0 + j >= cols) continue;
        vec4 v = vec4(acc[m * NP + j], acc[m * NP + j + 1], acc[m * NP + j + 2], acc[m * NP + j + 3]);
#if BWD_DATA == 1
        if (p.accumulate != 0) v += out4[(obase + j) / 4];
#endif
        out4[(obase + j) / 4] = v;
      }
    } else {
      [[unroll]] for (int j = 0; j < NP; ++j) {
        const int q = j0 + j;
        if (q >= cols) continue;
        int i;
        if (BWD_DATA == 1) i = S == 1 ? plane + q : plane + (q / p.ow) * S * p.w + (q % p.ow) * S;
        else i = plane + r * p.ow + q;
        float v = acc[m * NP + j];
#if BWD_DATA == 1
        if (p.accumulate != 0) v += outf[i];
#endif
        outf[i] = v;
      }
    }
  }
}

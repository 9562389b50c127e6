#version 450
// dw (+)= dL/dw, register-blocked variant for CPU drivers. The reduction runs over all
// n * oh * ow positions inside one invocation (no atomics, no partial sums): each invocation
// owns dw[o0 .. o0 + MB)[c][*][*] (MB x KH x KW accumulators) for one input channel c, the
// lanes of a subgroup take consecutive c. Every step covers R output rows x NB columns:
// the dy values are the same for all lanes, so each lane loads a share and subgroupShuffle
// hands them round; the x window (different per lane) is read as vec4s. All block loops
// are unrolled so register arrays are indexed by constants.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_shuffle : require
#include "conv2d_common.glsl"

layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
layout(constant_id = 3) const int MB = 8;    // out channels per invocation
layout(constant_id = 4) const int NB = 4;    // output columns per step
layout(constant_id = 5) const int R = 2;     // output rows per step
layout(constant_id = 6) const int KH = 3;
layout(constant_id = 7) const int KW = 3;
layout(constant_id = 8) const int S = 1;
layout(constant_id = 9) const int PAD = 1;
layout(constant_id = 10) const int VEC = 1;  // dy rows are vec4-aligned (ow % 4 == 0, NB % 4 == 0)
layout(constant_id = 11) const int WL = 8;   // lanes sharing dy loads (subgroup size; 1: none)

const int KK = KH * KW;
const int XR = (R - 1) * S + KH;
const int XW = (NB - 1) * S + KW;
const int NQ = (XW + 6) / 4;
const int U = VEC == 1 ? 4 : 1;
const int NU = MB * R * NB / U;              // dy units of one step
const int LU = (NU + WL - 1) / WL;

layout(std430, binding = 0) readonly buffer X4 { vec4 x4[]; };
layout(std430, binding = 1) readonly buffer Dyf { float dyf[]; };
layout(std430, binding = 2) readonly buffer Dy4 { vec4 dy4[]; };
layout(std430, binding = 3) buffer Dw { float dw[]; };  // read when accumulating

void main() {
  const int lane = int(gl_SubgroupInvocationID);
  const bool in_range = int(gl_GlobalInvocationID.x) < p.c_in;
  const int c = min(int(gl_GlobalInvocationID.x), p.c_in - 1);
  const int o0 = int(gl_WorkGroupID.y) * MB;
  const int last_q = (p.n * p.c_in * p.h * p.w + 3) / 4 - 1;
  const int dy_last = p.n * p.c_out * p.oh * p.ow - 1;

  float acc[MB * KK];
  [[unroll]] for (int i = 0; i < MB * KK; ++i) acc[i] = 0.0;

  for (int n = 0; n < p.n; ++n) {
    const int plane = (n * p.c_in + c) * p.h * p.w;
    for (int oh0 = 0; oh0 < p.oh; oh0 += R) {
      const int in_row0 = oh0 * S - PAD;
      int row_at[XR];
      bool row_ok[XR];
      [[unroll]] for (int t = 0; t < XR; ++t) {
        row_ok[t] = in_row0 + t >= 0 && in_row0 + t < p.h;
        row_at[t] = plane + clamp(in_row0 + t, 0, p.h - 1) * p.w;
      }
      for (int ow0 = 0; ow0 < p.ow; ow0 += NB) {
        // dy[n, o0 + m, oh0 + r, ow0 + j], zero outside; lane l loads units l, l + WL, ...
        vec4 loaded[LU];
        [[unroll]] for (int i = 0; i < LU; ++i) {
          const int u = min((WL > 1 ? lane % WL : 0) + i * WL, NU - 1);
          const int seg = u / (NB / U), off = u % (NB / U);   // seg = m * R + r
          const int m = seg / R, r = seg % R;
          const int base = ((n * p.c_out + min(o0 + m, p.c_out - 1)) * p.oh + min(oh0 + r, p.oh - 1)) * p.ow + ow0;
          if (VEC == 1) loaded[i] = dy4[base / 4 + off];
          else loaded[i] = vec4(dyf[min(base + off, dy_last)]);
        }
        float g[MB * R * NB];
        [[unroll]] for (int k = 0; k < MB * R * NB; ++k) {
          const int u = k / U;
          const vec4 v = WL > 1 ? subgroupShuffle(loaded[u / WL], u % WL) : loaded[u / WL];
          const int r = (k / NB) % R, j = k % NB;
          g[k] = (oh0 + r < p.oh && ow0 + j < p.ow) ? v[k % U] : 0.0;
        }
        // x window of this lane's channel, zero outside the image.
        const int in_col0 = ow0 * S - PAD;
        float xr[XR * XW];
        [[unroll]] for (int rr = 0; rr < XR; ++rr) {
          const int f = row_at[rr] + in_col0;
          const int qs = f >> 2, sh = f & 3;
          float xs[4 * NQ];
          [[unroll]] for (int k = 0; k < NQ; ++k) {
            const vec4 v = x4[clamp(qs + k, 0, last_q)];
            xs[4 * k] = v.x; xs[4 * k + 1] = v.y; xs[4 * k + 2] = v.z; xs[4 * k + 3] = v.w;
          }
          [[unroll]] for (int t = 0; t < XW; ++t) {
            const float v = sh == 0 ? xs[t] : sh == 1 ? xs[t + 1] : sh == 2 ? xs[t + 2] : xs[t + 3];
            const int iw = in_col0 + t;
            xr[rr * XW + t] = (row_ok[rr] && iw >= 0 && iw < p.w) ? v : 0.0;
          }
        }
        [[unroll]] for (int m = 0; m < MB; ++m)
          [[unroll]] for (int kh = 0; kh < KH; ++kh)
            [[unroll]] for (int kw = 0; kw < KW; ++kw)
              [[unroll]] for (int r = 0; r < R; ++r)
                [[unroll]] for (int j = 0; j < NB; ++j)
                  acc[(m * KH + kh) * KW + kw] += g[(m * R + r) * NB + j] * xr[(r * S + kh) * XW + j * S + kw];
      }
    }
  }

  if (!in_range) return;
  [[unroll]] for (int m = 0; m < MB; ++m) {
    if (o0 + m >= p.c_out) continue;
    [[unroll]] for (int k = 0; k < KK; ++k) {
      const int i = ((o0 + m) * p.c_in + c) * KK + k;
      dw[i] = acc[m * KK + k] + (p.accumulate != 0 ? dw[i] : 0.0);
    }
  }
}

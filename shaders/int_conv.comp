#version 450
// Integer convolution on packed weight codes (src/quant/int_model.h), portable path: the
// codes are unpacked with shifts and masks, multiplied with the int32 input codes and
// accumulated in int32, then requantized in 64-bit (int_common.glsl). Register-blocked
// for CPU drivers like conv2d_rb_body.glsl: each invocation computes MB out channels x R
// rows x NB columns with no shared memory; a step loads the MB x KK weight words of one
// packed word column once and reuses each unpacked code for R x NB outputs.
// MODE 0: y = requant(acc); 1 (stem): requant(acc, + sum of the weights of the taps inside
// the image); 2 (block conv2): requant(acc, + res * mult2); 3: y = acc (downsample).
// XOFF: the input codes' offset (signed codes a = c + XOFF): acc -= XOFF * the same border
// sum of the weights inside the image (zero padding stands for 0, not for code XOFF).
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "int_common.glsl"

layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
layout(constant_id = 3) const int KH = 3;
layout(constant_id = 4) const int KW = 3;
layout(constant_id = 5) const int S = 1;
layout(constant_id = 6) const int PAD = 1;
layout(constant_id = 7) const int BITS = 4;  // container bits of a code: 2, 4 or 8
layout(constant_id = 8) const int MODE = 0;
layout(constant_id = 9) const int MB = 8;
layout(constant_id = 10) const int R = 2;
layout(constant_id = 11) const int NB = 4;
layout(constant_id = 12) const int XOFF = 0;

layout(std430, binding = 0) readonly buffer Xb { int x[]; };
layout(std430, binding = 1) readonly buffer Wb { uint wcode[]; };
layout(std430, binding = 2) readonly buffer Rqb { ivec4 rq[]; };
layout(std430, binding = 3) readonly buffer Resb { int res[]; };
layout(std430, binding = 4) writeonly buffer Yb { int y[]; };

layout(push_constant) uniform Params {
  int n, c_in, h, w, c_out, oh, ow;
  int words;    // packed words per (out channel, tap)
  int levels;   // n of the output codes
  int wlevels;  // n of the weight codes
} p;

const int KK = KH * KW;
const int PER_WORD = 32 / BITS;
const uint MASK = (1u << BITS) - 1u;
const int XR = (R - 1) * S + KH, XW = (NB - 1) * S + KW;
const bool BORDER = MODE == 1 || XOFF != 0;

void main() {
  const int col_blocks = (p.ow + NB - 1) / NB, row_blocks = (p.oh + R - 1) / R;
  const int gid = int(gl_GlobalInvocationID.x);
  if (gid >= p.n * row_blocks * col_blocks) return;
  const int q0 = (gid % col_blocks) * NB;
  const int r0 = ((gid / col_blocks) % row_blocks) * R;
  const int n = gid / (col_blocks * row_blocks);
  const int o0 = int(gl_WorkGroupID.y) * MB;

  const int in_row0 = r0 * S - PAD, in_col0 = q0 * S - PAD;
  bool row_ok[XR], col_ok[XW];
  int row_at[XR], col_at[XW];
  [[unroll]] for (int t = 0; t < XR; ++t) {
    row_ok[t] = in_row0 + t >= 0 && in_row0 + t < p.h;
    row_at[t] = clamp(in_row0 + t, 0, p.h - 1) * p.w;
  }
  [[unroll]] for (int t = 0; t < XW; ++t) {
    col_ok[t] = in_col0 + t >= 0 && in_col0 + t < p.w;
    col_at[t] = clamp(in_col0 + t, 0, p.w - 1);
  }

  int acc[MB * R * NB], border[MB * R * NB];
  [[unroll]] for (int i = 0; i < MB * R * NB; ++i) acc[i] = 0, border[i] = 0;

  for (int cw = 0; cw < p.words; ++cw) {
    uint wv[MB * KK];
    [[unroll]] for (int m = 0; m < MB; ++m)
      [[unroll]] for (int t = 0; t < KK; ++t)
        wv[m * KK + t] = wcode[(min(o0 + m, p.c_out - 1) * KK + t) * p.words + cw];
    const int c_end = min(PER_WORD, p.c_in - cw * PER_WORD);
    [[dont_unroll]] for (int j = 0; j < c_end; ++j) {
      const int plane = (n * p.c_in + cw * PER_WORD + j) * p.h * p.w;
      int xr[XR * XW];
      [[unroll]] for (int rr = 0; rr < XR; ++rr)
        [[unroll]] for (int t = 0; t < XW; ++t)
          xr[rr * XW + t] = (row_ok[rr] && col_ok[t]) ? x[plane + row_at[rr] + col_at[t]] : 0;
      const int sh = j * BITS;
      [[unroll]] for (int m = 0; m < MB; ++m)
        [[unroll]] for (int kh = 0; kh < KH; ++kh)
          [[unroll]] for (int kw = 0; kw < KW; ++kw) {
            const int wq = 2 * int((wv[m * KK + kh * KW + kw] >> sh) & MASK) - p.wlevels;
            [[unroll]] for (int r = 0; r < R; ++r)
              [[unroll]] for (int q = 0; q < NB; ++q) {
                acc[(m * R + r) * NB + q] += wq * xr[(r * S + kh) * XW + q * S + kw];
                if (BORDER && row_ok[r * S + kh] && col_ok[q * S + kw]) border[(m * R + r) * NB + q] += wq;
              }
          }
    }
  }

  [[unroll]] for (int m = 0; m < MB; ++m) {
    const int o = o0 + m;
    if (o >= p.c_out) continue;
    const ivec4 a = MODE == 3 ? ivec4(0) : rq[2 * o];
    const I64 bias = MODE == 3 ? I64(0, 0u) : RQ_BIAS(rq[2 * o + 1]);
    [[unroll]] for (int r = 0; r < R; ++r) {
      if (r0 + r >= p.oh) continue;
      [[unroll]] for (int q = 0; q < NB; ++q) {
        if (q0 + q >= p.ow) continue;
        const int idx = ((n * p.c_out + o) * p.oh + r0 + r) * p.ow + q0 + q;
        const int i = (m * R + r) * NB + q;
        if (XOFF != 0) acc[i] -= XOFF * border[i];
        if (MODE == 3) {
          y[idx] = acc[i];
          continue;
        }
        I64 v = add64(mul64(acc[i], a.x), bias);
        if (MODE == 1) v = add64(v, mul64(border[i], a.y));
        if (MODE == 2) v = add64(v, mul64(res[idx], a.y));
        y[idx] = requant_code(v, a.z, p.levels);
      }
    }
  }
}

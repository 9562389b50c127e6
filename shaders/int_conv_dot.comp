#version 450
// Integer convolution, dot-product path: the arithmetic of int_conv.comp (same MODEs, same
// register blocking, requantization from int_common.glsl), with the inner product done by
// the unsigned packed 4x8-bit dot product (OpUDot = dotPacked4x8EXT(uint, uint)) on 4 input
// channels at a time. The weight values 2i - nw do not fit int8 at 8 bits, so the unsigned
// codes are used:  sum (2i - nw) a = 2 sum(i a) - nw sum(a),  sum(i a) from the dot of the
// code words, sum(a) from the dot of the activation word with 0x01010101 (shared by all MB
// out channels of an invocation).
// Layouts: weights are 8-bit codes, 4 in channels per word LSB first, [c_out, KK, words]
// (words = ceil(c_in / 4), the last word zero-padded; see IntConvGpu); activations are
// int32 codes in [0, 255] (NCHW, as for int_conv.comp), packed 4 channels per word in
// registers as they are loaded.
// Exactness: one OpUDot is at most 4 * 255 * 255 < 2^18, exact in uint. The sums wrap mod
// 2^32, so 2 sum(i a) - nw sum(a) in uint equals the true sum mod 2^32, which is the exact
// int32 accumulator whenever |acc| < 2^31: guaranteed for KK * c_in * 255 * 255 < 2^31, i.e.
// KK * c_in <= 33025 (3x3: c_in <= 3669; vkqat's ResNets have c_in <= 4 * width).
// The portable path's int32 multiply-adds wrap mod 2^32 too, so both paths agree bit for
// bit even beyond that bound. No saturating variant is used, so nothing can saturate.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#extension GL_EXT_spirv_intrinsics : require
#include "int_common.glsl"

// OpUDot of SPV_KHR_integer_dot_product (opcode 4451; capabilities 6019 DotProduct, 6018
// DotProductInput4x8BitPacked; literal 0 = PackedVectorFormat4x8Bit): exactly what
// GL_EXT_integer_dot_product's dotPacked4x8EXT(uint, uint) emits, declared through
// GL_EXT_spirv_intrinsics because Debian's glslang 12 predates that GLSL extension.
spirv_instruction(extensions = ["SPV_KHR_integer_dot_product"], capabilities = [6019, 6018], id = 4451)
uint udot_4x8_packed(uint a, uint b, spirv_literal int packed_vector_format);
#define DOT4(a, b) udot_4x8_packed(a, b, 0)

layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
layout(constant_id = 3) const int KH = 3;
layout(constant_id = 4) const int KW = 3;
layout(constant_id = 5) const int S = 1;
layout(constant_id = 6) const int PAD = 1;
layout(constant_id = 7) const int MODE = 0;
layout(constant_id = 8) const int MB = 8;
layout(constant_id = 9) const int R = 2;
layout(constant_id = 10) const int NB = 4;
layout(constant_id = 11) const int XOFF = 0;  // input codes' offset, as int_conv.comp

layout(std430, binding = 0) readonly buffer Xb { int x[]; };
layout(std430, binding = 1) readonly buffer Wb { uint wcode[]; };
layout(std430, binding = 2) readonly buffer Rqb { ivec4 rq[]; };
layout(std430, binding = 3) readonly buffer Resb { int res[]; };
layout(std430, binding = 4) writeonly buffer Yb { int y[]; };

layout(push_constant) uniform Params {
  int n, c_in, h, w, c_out, oh, ow;
  int words;    // packed words per (out channel, tap): ceil(c_in / 4)
  int levels;   // n of the output codes
  int wlevels;  // n of the weight codes
} p;

const int KK = KH * KW;
const int XR = (R - 1) * S + KH, XW = (NB - 1) * S + KW;
const uint ONES = 0x01010101u;
const bool BORDER = MODE == 1 || XOFF != 0;

void main() {
  const int col_blocks = (p.ow + NB - 1) / NB, row_blocks = (p.oh + R - 1) / R;
  const int gid = int(gl_GlobalInvocationID.x);
  if (gid >= p.n * row_blocks * col_blocks) return;
  const int q0 = (gid % col_blocks) * NB;
  const int r0 = ((gid / col_blocks) % row_blocks) * R;
  const int n = gid / (col_blocks * row_blocks);
  const int o0 = int(gl_WorkGroupID.y) * MB;
  const int hw = p.h * p.w;

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

  uint acc[MB * R * NB];  // sum(i a), mod 2^32
  uint act_sum[R * NB];   // sum(a) over each output's window, mod 2^32
  int border[MB * R * NB];
  [[unroll]] for (int i = 0; i < MB * R * NB; ++i) acc[i] = 0u, border[i] = 0;
  [[unroll]] for (int i = 0; i < R * NB; ++i) act_sum[i] = 0u;

  for (int cw = 0; cw < p.words; ++cw) {
    uint wv[MB * KK];
    [[unroll]] for (int m = 0; m < MB; ++m)
      [[unroll]] for (int t = 0; t < KK; ++t)
        wv[m * KK + t] = wcode[(min(o0 + m, p.c_out - 1) * KK + t) * p.words + cw];
    const int c0 = cw * 4;
    const int plane = (n * p.c_in + c0) * hw;
    uint xp[XR * XW], xs[XR * XW];  // 4 channels packed per position, and their sum
    [[unroll]] for (int rr = 0; rr < XR; ++rr)
      [[unroll]] for (int t = 0; t < XW; ++t) {
        uint v = 0u;
        if (row_ok[rr] && col_ok[t]) {
          const int at = plane + row_at[rr] + col_at[t];
          [[unroll]] for (int j = 0; j < 4; ++j)
            if (c0 + j < p.c_in) v |= uint(x[at + j * hw]) << (8 * j);
        }
        xp[rr * XW + t] = v;
        xs[rr * XW + t] = DOT4(v, ONES);
      }
    [[unroll]] for (int r = 0; r < R; ++r)
      [[unroll]] for (int q = 0; q < NB; ++q)
        [[unroll]] for (int kh = 0; kh < KH; ++kh)
          [[unroll]] for (int kw = 0; kw < KW; ++kw) act_sum[r * NB + q] += xs[(r * S + kh) * XW + q * S + kw];
    // Stem / offset input: the sum of 2i - nw over the real channels of this word (padding
    // codes are 0).
    const int w_off = BORDER ? p.wlevels * min(4, p.c_in - c0) : 0;
    [[unroll]] for (int m = 0; m < MB; ++m)
      [[unroll]] for (int kh = 0; kh < KH; ++kh)
        [[unroll]] for (int kw = 0; kw < KW; ++kw) {
          const uint wq = wv[m * KK + kh * KW + kw];
          const int wsum = BORDER ? 2 * int(DOT4(wq, ONES)) - w_off : 0;
          [[unroll]] for (int r = 0; r < R; ++r)
            [[unroll]] for (int q = 0; q < NB; ++q) {
              acc[(m * R + r) * NB + q] += DOT4(wq, xp[(r * S + kh) * XW + q * S + kw]);
              if (BORDER && row_ok[r * S + kh] && col_ok[q * S + kw]) border[(m * R + r) * NB + q] += wsum;
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
        const int total = int(2u * acc[i] - uint(p.wlevels) * act_sum[r * NB + q]) - XOFF * border[i];
        if (MODE == 3) {
          y[idx] = total;
          continue;
        }
        I64 v = add64(mul64(total, a.x), bias);
        if (MODE == 1) v = add64(v, mul64(border[i], a.y));
        if (MODE == 2) v = add64(v, mul64(res[idx], a.y));
        y[idx] = requant_code(v, a.z, p.levels);
      }
    }
  }
}

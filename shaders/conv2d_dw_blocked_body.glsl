// Depthwise convolution (groups == c_in == c_out, w [c, 1, kh, kw]), blocked along rows:
// every invocation handles OB neighbouring columns of one row, so the inputs under the
// overlapping windows are loaded once into registers ((OB - 1) * STRIDE + KW per kernel
// row instead of OB * KW) and the kernel shape is compiled in (specialization constants:
// the loops unroll and the register arrays keep constant indices; a CPU driver pays per
// load instruction, and dynamic indexing would send the arrays to memory).
// Define DW_KERNEL before including:
//   DW_FWD:         y row segment of OB outputs per invocation (one per n, c, oh, block).
//   DW_BWD_DATA:    dx row segment of OB elements (OB a multiple of STRIDE, so which taps
//                   reach a column and from which dy column is known at compile time).
//   DW_BWD_WEIGHT:  split over (channel = workgroup y, chunk of the n * oh * column-block
//                   units = workgroup x): each invocation sums its units' kh x kw products
//                   in registers, the workgroup adds them in a fixed tree through shared
//                   memory, and one partial per (chunk, channel) is written; the host
//                   merges chunks with conv2d_split_sum in chunk order (no float atomics:
//                   deterministic). With one chunk the kernel writes dw itself.
// Out-of-range loads read a clamped address and are masked to 0 (no out-of-bounds access,
// even where the driver evaluates both sides of a select).
#include "conv2d_common.glsl"
#define DW_FWD 0
#define DW_BWD_DATA 1
#define DW_BWD_WEIGHT 2
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
layout(constant_id = 3) const int KH = 3;
layout(constant_id = 4) const int KW = 3;
layout(constant_id = 5) const int STRIDE = 1;
layout(constant_id = 6) const int PAD = 1;
layout(constant_id = 7) const int OB = 4;              // columns per invocation (a multiple of 4)
layout(constant_id = 8) const int UNITS_PER_CHUNK = 1;  // DW_BWD_WEIGHT
layout(constant_id = 9) const int LOCAL = 64;           // DW_BWD_WEIGHT: == local_size_x
layout(constant_id = 10) const bool VEC4 = false;       // DW_FWD, DW_BWD_WEIGHT: x rows as vec4s
const int XR = (OB - 1) * STRIDE + KW;  // input columns under OB neighbouring windows

#if DW_KERNEL != DW_BWD_DATA
layout(std430, binding = 0) readonly buffer Xb { float x[]; };
// The same x as vec4s (bound last, so the kernel keeps to 4 storage buffers).
layout(std430, binding = 3) readonly buffer X4b { vec4 x4[]; };

// xr[j] = x[row base + ix0 + j], 0 outside the row. With VEC4 (w % 4 == 0; OB is a multiple
// of 4, so ix0 = ow0 * STRIDE - PAD sits OFF = (-PAD) mod 4 floats past an aligned column):
// whole aligned vec4s, each inside the row or wholly outside it, at compile-time offsets.
const int OFF = (4 - PAD % 4) % 4, NV = (OFF + XR + 3) / 4;
void load_x_row(int base, int ix0, out float xr[XR]) {
  if (VEC4) {
    const int a0 = ix0 - OFF;
    for (int q = 0; q < NV; ++q) {
      const int col = a0 + 4 * q;
      const vec4 v = x4[(base + clamp(col, 0, p.w - 4)) / 4];
      const vec4 m = (col >= 0 && col < p.w) ? v : vec4(0.0);
      for (int e = 0; e < 4; ++e)
        if (4 * q + e - OFF >= 0 && 4 * q + e - OFF < XR) xr[4 * q + e - OFF] = m[e];
    }
  } else {
    for (int j = 0; j < XR; ++j) {
      const int iw = ix0 + j;
      const float v = x[base + clamp(iw, 0, p.w - 1)];
      xr[j] = (iw >= 0 && iw < p.w) ? v : 0.0;
    }
  }
}
#endif

#if DW_KERNEL == DW_FWD
layout(std430, binding = 1) readonly buffer Wb { float w[]; };
layout(std430, binding = 2) writeonly buffer Yb { float y[]; };

void main() {
  const int blocks = (p.ow + OB - 1) / OB;
  const int u = int(gl_GlobalInvocationID.x);
  if (u >= p.n * p.c_out * p.oh * blocks) return;
  const int cb = u % blocks, row = u / blocks, oh = row % p.oh, nc = row / p.oh, c = nc % p.c_out;
  const int ow0 = cb * OB, ix0 = ow0 * STRIDE - PAD;
  float acc[OB];
  for (int o = 0; o < OB; ++o) acc[o] = 0.0;
  for (int kh = 0; kh < KH; ++kh) {
    const int ih = oh * STRIDE - PAD + kh;
    if (ih < 0 || ih >= p.h) continue;
    const int base = (nc * p.h + ih) * p.w;
    float xr[XR];
    load_x_row(base, ix0, xr);
    for (int kw = 0; kw < KW; ++kw) {
      const float wv = w[(c * KH + kh) * KW + kw];
      for (int o = 0; o < OB; ++o) acc[o] += wv * xr[o * STRIDE + kw];
    }
  }
  const int dst = (nc * p.oh + oh) * p.ow + ow0;
  for (int o = 0; o < OB; ++o)
    if (ow0 + o < p.ow) y[dst + o] = acc[o];
}

#elif DW_KERNEL == DW_BWD_DATA
layout(std430, binding = 0) readonly buffer Dyb { float dy[]; };
layout(std430, binding = 1) readonly buffer Wb { float w[]; };
layout(std430, binding = 2) buffer Dxb { float dx[]; };  // read when accumulating

// dx column iw0 + o takes tap kw from dy column (iw0 + o + PAD - kw) / STRIDE when that is
// whole; iw0 is a multiple of STRIDE, so both are constants relative to iw0 / STRIDE
// (offset by STRIDE * KW to keep the integer division on non-negative numbers).
const int BIAS = STRIDE * KW;
const int R0 = (PAD - (KW - 1) + BIAS) / STRIDE - KW;  // first dy column (relative)
const int R1 = (OB - 1 + PAD + BIAS) / STRIDE - KW;    // last
const int RN = R1 - R0 + 1;

void main() {
  const int blocks = (p.w + OB - 1) / OB;
  const int u = int(gl_GlobalInvocationID.x);
  if (u >= p.n * p.c_in * p.h * blocks) return;
  const int cb = u % blocks, row = u / blocks, ih = row % p.h, nc = row / p.h, c = nc % p.c_in;
  const int iw0 = cb * OB, j0 = iw0 / STRIDE + R0;
  float acc[OB];
  for (int o = 0; o < OB; ++o) acc[o] = 0.0;
  for (int kh = 0; kh < KH; ++kh) {
    const int th = ih + PAD - kh;
    if (th < 0 || th % STRIDE != 0 || th / STRIDE >= p.oh) continue;
    const int base = (nc * p.oh + th / STRIDE) * p.ow;
    float dr[RN];
    for (int j = 0; j < RN; ++j) {
      const int col = j0 + j;
      const float v = dy[base + clamp(col, 0, p.ow - 1)];
      dr[j] = (col >= 0 && col < p.ow) ? v : 0.0;
    }
    for (int kw = 0; kw < KW; ++kw) {
      const float wv = w[(c * KH + kh) * KW + kw];
      for (int o = 0; o < OB; ++o)
        if ((o + PAD - kw + BIAS) % STRIDE == 0) acc[o] += wv * dr[(o + PAD - kw + BIAS) / STRIDE - KW - R0];
    }
  }
  const int dst = (nc * p.h + ih) * p.w + iw0;
  for (int o = 0; o < OB; ++o)
    if (iw0 + o < p.w) dx[dst + o] = acc[o] + (p.accumulate != 0 ? dx[dst + o] : 0.0);
}

#else  // DW_BWD_WEIGHT
layout(std430, binding = 1) readonly buffer Dyb { float dy[]; };
// [chunks][c][kh][kw] partial sums, or dw itself with one chunk (read when accumulating).
layout(std430, binding = 2) buffer Outb { float outp[]; };
const int KK = KH * KW;
shared float red[KK * LOCAL];

void main() {
  const int blocks = (p.ow + OB - 1) / OB, units = p.n * p.oh * blocks;
  const int c = int(gl_WorkGroupID.y), chunk = int(gl_WorkGroupID.x), lid = int(gl_LocalInvocationID.x);
  const int first = chunk * UNITS_PER_CHUNK, last = min(first + UNITS_PER_CHUNK, units);
  float acc[KK];
  for (int k = 0; k < KK; ++k) acc[k] = 0.0;
  for (int u = first + lid; u < last; u += LOCAL) {
    const int cb = u % blocks, row = u / blocks, oh = row % p.oh, n = row / p.oh;
    const int ow0 = cb * OB, ix0 = ow0 * STRIDE - PAD, nc = n * p.c_out + c;
    const int dbase = (nc * p.oh + oh) * p.ow + ow0;
    float g[OB];
    for (int o = 0; o < OB; ++o) {
      const float v = dy[dbase + min(o, p.ow - 1 - ow0)];
      g[o] = ow0 + o < p.ow ? v : 0.0;
    }
    for (int kh = 0; kh < KH; ++kh) {
      const int ih = oh * STRIDE - PAD + kh;
      if (ih < 0 || ih >= p.h) continue;
      const int base = (nc * p.h + ih) * p.w;
      float xr[XR];
      load_x_row(base, ix0, xr);
      for (int kw = 0; kw < KW; ++kw) {
        float s = 0.0;
        for (int o = 0; o < OB; ++o) s += g[o] * xr[o * STRIDE + kw];
        acc[kh * KW + kw] += s;
      }
    }
  }
  // Fixed-order tree over the workgroup (LOCAL is a power of two).
  for (int k = 0; k < KK; ++k) red[k * LOCAL + lid] = acc[k];
  barrier();
  for (int half_ = LOCAL / 2; half_ > 0; half_ /= 2) {
    if (lid < half_)
      for (int k = 0; k < KK; ++k) red[k * LOCAL + lid] += red[k * LOCAL + lid + half_];
    barrier();
  }
  for (int k = lid; k < KK; k += LOCAL) {
    const int i = (chunk * p.c_out + c) * KK + k;
    outp[i] = red[k * LOCAL] + (p.accumulate != 0 ? outp[i] : 0.0);
  }
}
#endif

#version 450
// Depthwise integer convolution (groups = channels, src/quant/int_model.h): one invocation
// per output code; each out channel's codes hold one in channel, one packed word per tap.
// int32 accumulation, 64-bit requantization (int_common.glsl). MODE as int_conv.comp:
// 0 requant, 1 stem (+ border sum of the weights inside the image), 2 residual, 3 raw.
// XOFF: the input codes' offset (signed codes): acc -= XOFF * that border sum.
#extension GL_GOOGLE_include_directive : require
#include "int_common.glsl"

layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
layout(constant_id = 3) const int BITS = 4;  // container bits of a code: 2, 4 or 8
layout(constant_id = 4) const int MODE = 0;
layout(constant_id = 5) const int XOFF = 0;

layout(std430, binding = 0) readonly buffer Xb { int x[]; };
layout(std430, binding = 1) readonly buffer Wb { uint wcode[]; };
layout(std430, binding = 2) readonly buffer Rqb { ivec4 rq[]; };
layout(std430, binding = 3) readonly buffer Resb { int res[]; };
layout(std430, binding = 4) writeonly buffer Yb { int y[]; };

layout(push_constant) uniform Params {
  int n, c, h, w, oh, ow, k, stride, pad;
  int levels;   // n of the output codes
  int wlevels;  // n of the weight codes
} p;

const uint MASK = (1u << BITS) - 1u;

void main() {
  const int idx = int(gl_GlobalInvocationID.x);
  if (idx >= p.n * p.c * p.oh * p.ow) return;
  const int q = idx % p.ow, r = (idx / p.ow) % p.oh, o = (idx / (p.ow * p.oh)) % p.c;
  const int plane = (idx / (p.ow * p.oh)) * p.h * p.w;  // (image, channel) plane of x
  int acc = 0, border = 0;
  for (int kh = 0; kh < p.k; ++kh) {
    const int iy = r * p.stride - p.pad + kh;
    if (iy < 0 || iy >= p.h) continue;
    for (int kw = 0; kw < p.k; ++kw) {
      const int ix = q * p.stride - p.pad + kw;
      if (ix < 0 || ix >= p.w) continue;
      const int wq = 2 * int(wcode[o * p.k * p.k + kh * p.k + kw] & MASK) - p.wlevels;
      acc += wq * x[plane + iy * p.w + ix];
      border += wq;
    }
  }
  acc -= XOFF * border;
  if (MODE == 3) {
    y[idx] = acc;
    return;
  }
  const ivec4 a = rq[2 * o];
  I64 v = add64(mul64(acc, a.x), RQ_BIAS(rq[2 * o + 1]));
  if (MODE == 1) v = add64(v, mul64(border, a.y));
  if (MODE == 2) v = add64(v, mul64(res[idx], a.y));
  y[idx] = requant_code(v, a.z, p.levels);
}

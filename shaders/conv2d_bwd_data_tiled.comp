#version 450
// dx (+)= conv2d_transpose(dy, w), tiled variant for GPUs: M = c_in, N = n*h*w,
// K = c_out*kh*kw; B gathers dy[n, o, (ih + pad - kh) / stride, ...] where that divides.
#extension GL_GOOGLE_include_directive : require
#include "conv2d_common.glsl"

layout(std430, binding = 0) readonly buffer Dyb { float dy[]; };
layout(std430, binding = 1) readonly buffer Wb { float w[]; };
layout(std430, binding = 2) buffer Dxb { float dx[]; };  // read when accumulating

#define GEMM_M p.c_in
#define GEMM_N (p.n * p.h * p.w)
#define GEMM_K (p.c_out * p.kh * p.kw)

float a_at(int m, int k) {
  const int kk = k % (p.kh * p.kw), o = k / (p.kh * p.kw);
  return w[(o * p.c_in + m) * p.kh * p.kw + kk];
}

float b_at(int k, int col) {
  const int kw = k % p.kw, kh = (k / p.kw) % p.kh, o = k / (p.kw * p.kh);
  const int iw = col % p.w, ih = (col / p.w) % p.h, n = col / (p.w * p.h);
  const int th = ih + p.pad - kh, tw = iw + p.pad - kw;
  if (th < 0 || tw < 0 || th % p.stride != 0 || tw % p.stride != 0) return 0.0;
  const int oh = th / p.stride, ow = tw / p.stride;
  if (oh >= p.oh || ow >= p.ow) return 0.0;
  return dy[((n * p.c_out + o) * p.oh + oh) * p.ow + ow];
}

void store(int m, int col, float v) {
  const int pix = col % (p.h * p.w), n = col / (p.h * p.w);
  const int i = (n * p.c_in + m) * p.h * p.w + pix;
  dx[i] = v + (p.accumulate != 0 ? dx[i] : 0.0);
}

#include "conv2d_tiled_body.glsl"

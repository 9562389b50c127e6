#version 450
// y = conv2d(x, w), tiled variant for GPUs: M = c_out, N = n*oh*ow, K = c_in*kh*kw.
#extension GL_GOOGLE_include_directive : require
#include "conv2d_common.glsl"

layout(std430, binding = 0) readonly buffer Xb { float x[]; };
layout(std430, binding = 1) readonly buffer Wb { float w[]; };
layout(std430, binding = 2) writeonly buffer Yb { float y[]; };

#define GEMM_M p.c_out
#define GEMM_N (p.n * p.oh * p.ow)
#define GEMM_K (p.c_in * p.kh * p.kw)

float a_at(int m, int k) { return w[m * GEMM_K + k]; }

float b_at(int k, int col) {
  const int kw = k % p.kw, kh = (k / p.kw) % p.kh, c = k / (p.kw * p.kh);
  const int ow = col % p.ow, oh = (col / p.ow) % p.oh, n = col / (p.ow * p.oh);
  const int ih = oh * p.stride - p.pad + kh, iw = ow * p.stride - p.pad + kw;
  if (ih < 0 || ih >= p.h || iw < 0 || iw >= p.w) return 0.0;
  return x[((n * p.c_in + c) * p.h + ih) * p.w + iw];
}

void store(int m, int col, float v) {
  const int pix = col % (p.oh * p.ow), n = col / (p.oh * p.ow);
  y[(n * p.c_out + m) * p.oh * p.ow + pix] = v;
}

#include "conv2d_tiled_body.glsl"

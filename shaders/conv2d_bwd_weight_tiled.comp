#version 450
// dw (+)= dL/dw, tiled variant for GPUs: M = c_out, N = c_in*kh*kw, K = n*oh*ow. Each
// workgroup reduces over all of K for its tile, or (split-K, K_CHUNK > 0, when the tiles
// are too few to fill a GPU) over chunk z of K, writing partial sums [z][c_out][c_in*kh*kw]
// that conv2d_split_sum adds in z order (no atomics: deterministic).
#extension GL_GOOGLE_include_directive : require
#include "conv2d_common.glsl"

layout(std430, binding = 0) readonly buffer Xb { float x[]; };
layout(std430, binding = 1) readonly buffer Dyb { float dy[]; };
layout(std430, binding = 2) buffer Dwb { float dw[]; };  // or the partials; read when accumulating

#define GEMM_M p.c_out
#define GEMM_N (p.c_in * p.kh * p.kw)
#define GEMM_K (p.n * p.oh * p.ow)

float a_at(int m, int k) {
  const int pix = k % (p.oh * p.ow), n = k / (p.oh * p.ow);
  return dy[(n * p.c_out + m) * p.oh * p.ow + pix];
}

float b_at(int k, int col) {
  const int kw = col % p.kw, kh = (col / p.kw) % p.kh, c = col / (p.kw * p.kh);
  const int ow = k % p.ow, oh = (k / p.ow) % p.oh, n = k / (p.ow * p.oh);
  const int ih = oh * p.stride - p.pad + kh, iw = ow * p.stride - p.pad + kw;
  if (ih < 0 || ih >= p.h || iw < 0 || iw >= p.w) return 0.0;
  return x[((n * p.c_in + c) * p.h + ih) * p.w + iw];
}

void store(int m, int col, float v) {
  const int i = (int(gl_WorkGroupID.z) * GEMM_M + m) * GEMM_N + col;
  dw[i] = v + (p.accumulate != 0 ? dw[i] : 0.0);
}

#include "conv2d_tiled_body.glsl"

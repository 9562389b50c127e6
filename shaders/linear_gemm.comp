#version 450
// C[M, N] (+)= A[M, K] * B[K, N] (+ bias[N]) with arbitrary strides for A and B, so the
// same kernel serves linear forward (x W^T + b), backward data (dy W) and backward weight
// (dy^T x). Each invocation computes a BM x BN block from registers (no shared memory:
// the layer sizes are small and CPU drivers are fastest this way).
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
layout(constant_id = 3) const uint BM = 4;
layout(constant_id = 4) const uint BN = 4;

layout(std430, binding = 0) readonly buffer Ab { float a[]; };
layout(std430, binding = 1) readonly buffer Bb { float b[]; };
layout(std430, binding = 2) readonly buffer BIASb { float bias[]; };  // read when use_bias
layout(std430, binding = 3) buffer Cb { float c[]; };  // read when accumulating

layout(push_constant) uniform Params {
  uint m, n, k;
  uint a_stride_m, a_stride_k, b_stride_k, b_stride_n;
  uint accumulate, use_bias;
} p;

void main() {
  uint m0 = gl_GlobalInvocationID.y * BM, n0 = gl_GlobalInvocationID.x * BN;
  if (m0 >= p.m || n0 >= p.n) return;
  uint a_row[BM], b_col[BN];  // clamped so tail blocks read valid memory; stores are masked
  for (uint i = 0; i < BM; ++i) a_row[i] = min(m0 + i, p.m - 1u) * p.a_stride_m;
  for (uint j = 0; j < BN; ++j) b_col[j] = min(n0 + j, p.n - 1u) * p.b_stride_n;
  float acc[BM][BN];
  for (uint i = 0; i < BM; ++i)
    for (uint j = 0; j < BN; ++j) acc[i][j] = 0.0;
  for (uint kk = 0; kk < p.k; ++kk) {
    float av[BM], bv[BN];
    for (uint i = 0; i < BM; ++i) av[i] = a[a_row[i] + kk * p.a_stride_k];
    for (uint j = 0; j < BN; ++j) bv[j] = b[kk * p.b_stride_k + b_col[j]];
    for (uint i = 0; i < BM; ++i)
      for (uint j = 0; j < BN; ++j) acc[i][j] += av[i] * bv[j];
  }
  for (uint i = 0; i < BM; ++i) {
    if (m0 + i >= p.m) break;
    for (uint j = 0; j < BN; ++j) {
      if (n0 + j >= p.n) break;
      uint idx = (m0 + i) * p.n + n0 + j;
      float v = acc[i][j];
      if (p.use_bias != 0u) v += bias[n0 + j];
      c[idx] = p.accumulate != 0u ? c[idx] + v : v;
    }
  }
}

// Shared-memory tiled implicit GEMM for GPUs, included by conv2d_*_tiled.comp. The
// including shader defines GEMM_M/N/K and a_at(m, k), b_at(k, col), store(m, col, v):
// C[m][col] = sum_k A[m][k] * B[k][col], with A and B gathered on the fly from the conv
// tensors (no im2col buffer). A BM x BN tile per workgroup, staged BK deep through shared
// memory; each invocation accumulates a TM x TN micro-tile in registers.
#extension GL_EXT_control_flow_attributes : require

layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
layout(constant_id = 3) const int BM = 64;
layout(constant_id = 4) const int BN = 64;
layout(constant_id = 5) const int BK = 16;
layout(constant_id = 6) const int TM = 4;
layout(constant_id = 7) const int TN = 4;
const int THREADS = (BM / TM) * (BN / TN);  // must equal local_size_x
// Split-K (backward-weight): workgroup z reduces k in [z * K_CHUNK, (z + 1) * K_CHUNK) only;
// 0 = all of K. The including shader then stores partial sums per z.
layout(constant_id = 8) const int K_CHUNK = 0;

shared float As[BK * BM];  // [k][m]
shared float Bs[BK * BN];  // [k][col]

void main() {
  const int tid = int(gl_LocalInvocationID.x);
  const int tm = tid / (BN / TN), tn = tid % (BN / TN);
  const int m0 = int(gl_WorkGroupID.y) * BM, n0 = int(gl_WorkGroupID.x) * BN;
  float acc[TM * TN];
  [[unroll]] for (int i = 0; i < TM * TN; ++i) acc[i] = 0.0;
  const int k_begin = K_CHUNK > 0 ? int(gl_WorkGroupID.z) * K_CHUNK : 0;
  const int k_end = K_CHUNK > 0 ? min(k_begin + K_CHUNK, GEMM_K) : GEMM_K;

  for (int k0 = k_begin; k0 < k_end; k0 += BK) {
    // Consecutive invocations read consecutive k of A (rows of w are k-contiguous) and
    // consecutive columns of B (pixels are contiguous in NCHW).
    for (int i = tid; i < BM * BK; i += THREADS) {
      const int mm = i / BK, kk = i % BK;
      const int m = m0 + mm, k = k0 + kk;
      As[kk * BM + mm] = (m < GEMM_M && k < k_end) ? a_at(m, k) : 0.0;
    }
    for (int i = tid; i < BK * BN; i += THREADS) {
      const int kk = i / BN, nn = i % BN;
      const int col = n0 + nn, k = k0 + kk;
      Bs[kk * BN + nn] = (col < GEMM_N && k < k_end) ? b_at(k, col) : 0.0;
    }
    barrier();
    [[unroll]] for (int kk = 0; kk < BK; ++kk) {
      float a[TM], b[TN];
      [[unroll]] for (int i = 0; i < TM; ++i) a[i] = As[kk * BM + tm * TM + i];
      [[unroll]] for (int j = 0; j < TN; ++j) b[j] = Bs[kk * BN + tn * TN + j];
      [[unroll]] for (int i = 0; i < TM; ++i)
        [[unroll]] for (int j = 0; j < TN; ++j) acc[i * TN + j] += a[i] * b[j];
    }
    barrier();
  }

  [[unroll]] for (int i = 0; i < TM; ++i)
    [[unroll]] for (int j = 0; j < TN; ++j) {
      const int m = m0 + tm * TM + i, col = n0 + tn * TN + j;
      if (m < GEMM_M && col < GEMM_N) store(m, col, acc[i * TN + j]);
    }
}

// Helpers shared by the reduce_* shaders. Op codes match ReduceKernelOp in reduce.cpp.
const int OP_SUM = 0;      // partial = compensated sum
const int OP_MEANVAR = 1;  // partial = (mean, M2); counts follow from the partial's index
const int OP_MAXABS = 2;   // partial = max |x|

#include "kahan.glsl"

// Chan et al.: merges summary b (count n_b, mean, M2) into a.
void chan_merge(inout float n_a, inout float mean_a, inout float m2_a, float n_b, float mean_b,
                float m2_b) {
  if (n_b == 0.0) return;
  float n = n_a + n_b;
  float d = mean_b - mean_a;
  float f = n_b / n;
  mean_a += d * f;
  m2_a += m2_b + d * d * n_a * f;
  n_a = n;
}

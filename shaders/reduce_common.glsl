// Helpers shared by the reduce_* shaders. Op codes match ReduceKernelOp in reduce.cpp.
const int OP_SUM = 0;      // partial = compensated sum
const int OP_MEANVAR = 1;  // partial = (mean, M2); counts follow from the partial's index
const int OP_MAXABS = 2;   // partial = max |x|

// Kahan summation. `precise` keeps the compiler from folding (t - s) - y to 0.
void kahan_add(inout float s, inout float c, float v) {
  precise float y = v - c;
  precise float t = s + y;
  precise float nc = (t - s) - y;
  c = nc;
  s = t;
}
void kahan_add4(inout vec4 s, inout vec4 c, vec4 v) {
  precise vec4 y = v - c;
  precise vec4 t = s + y;
  precise vec4 nc = (t - s) - y;
  c = nc;
  s = t;
}

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

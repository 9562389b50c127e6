// DoReFa weight quantizer (src/quant/dorefa.h), per tensor; float elements.
// stat[0] is max|w| (k >= 2; max|tanh w| = tanh(max|w|)) or mean|w| (binary, k = 1).
// Forward  k >= 2: t = tanh(w), u = t * (0.5 / m) + 0.5, level = round(n u), wq = level * (2/n) - 1
//          k = 1:  wq = sign(w) * mean|w|
// Backward k >= 2: dw (+)= g * (1 - t^2) * (1/m);  k = 1: dw (+)= g (STE)
// with m = tanh(max|w|) a constant (1/m := 0 when m = 0, an all-zero tensor).
// Define DOREFA_BACKWARD (0/1) before including.
#define VEC_WIDTH 1
#include "quant_common.glsl"

layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;

layout(std430, binding = 0) readonly buffer Wb { float w[]; };
layout(std430, binding = 1) readonly buffer Statb { float stat[]; };
#if DOREFA_BACKWARD
layout(std430, binding = 2) readonly buffer Gb { float g[]; };
layout(std430, binding = 3) buffer DWb { float dw[]; };  // read when accumulating
layout(push_constant) uniform Params { PLAN_FIELDS uint binary; uint accumulate; } p;
#else
layout(std430, binding = 2) writeonly buffer WQb { float wq[]; };
layout(push_constant) uniform Params { PLAN_FIELDS uint binary; float n; float two_inv_n; } p;
#endif
#include "quant_plan.glsl"

void main() {
  Walk it;
  walk_begin(it);
  float m, unused;
  tanh_sech2(stat[0], m, unused);
#if DOREFA_BACKWARD
  float inv_m = m > 0.0 ? 1.0 / m : 0.0;
  for (; walk_valid(it); walk_next(it)) {
    uint i = walk_unit(it);
    float d = g[i];
    if (p.binary == 0u) {
      float t, sech2;
      tanh_sech2(w[i], t, sech2);
      precise float v = d * sech2 * inv_m;
      d = v;
    }
    if (p.accumulate != 0u) d += dw[i];
    dw[i] = d;
  }
#else
  float half_inv_m = m > 0.0 ? 0.5 / m : 0.0;
  float mean_abs = stat[0];
  for (; walk_valid(it); walk_next(it)) {
    uint i = walk_unit(it);
    float x = w[i];
    if (p.binary != 0u) {
      wq[i] = sign(x) * mean_abs;
    } else {
      float t, sech2;
      tanh_sech2(x, t, sech2);
      precise float r = (t * half_inv_m + 0.5) * p.n;
      precise float q = round_half_away(r) * p.two_inv_n - 1.0;
      wq[i] = q;
    }
  }
#endif
}

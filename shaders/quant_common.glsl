// Helpers shared by the quant_* shaders (src/quant). Every formula here has a C++ twin in
// src/quant/common.h that performs the same float operations in the same order, so the
// CPU reference lands on the same quantization level bit for bit.
//
// Element width: define VEC_WIDTH (1 or 4) before including. Activation kernels come in a
// float and a vec4 flavour (CPU drivers pay per load instruction); the arithmetic is written
// once per scalar lane, see lane()/set_lane().
#if VEC_WIDTH == 4
#define VEC vec4
float lane(vec4 v, int l) { return v[l]; }
void set_lane(inout vec4 v, int l, float s) { v[l] = s; }
#else
#define VEC float
float lane(float v, int l) { return v; }
void set_lane(inout float v, int l, float s) { v = s; }
#endif

// Fields every quant kernel's push block starts with (PlanPush in src/quant/plan.h): the
// tensor viewed as [outer, channels, inner] (inner counted in VEC units), `partials`
// invocations per channel, each handling up to `chunk` units spaced one workgroup apart
// (see quant_plan.glsl); step_outer/step_inner = (workgroup size) / inner, % inner.
#define PLAN_FIELDS \
  uint outer;       \
  uint channels;    \
  uint inner;       \
  uint partials;    \
  uint chunk;       \
  uint step_outer;  \
  uint step_inner;

#include "quant_round.glsl"

// tanh and its derivative 1 - tanh^2, accurate to a few ulp relative everywhere (Cephes
// tanhf): the driver's tanh may lose relative precision near 0 (e^x - e^-x) and DoReFa
// divides by max|tanh|, so small weights need it. Large |x|: e = 2 / (exp(2|x|) + 1),
// tanh = 1 - e and 1 - tanh^2 = e (2 - e) without cancellation.
void tanh_sech2(float x, out float t, out float sech2) {
  float ax = abs(x);
  if (ax < 0.625) {
    precise float z = x * x;
    const float c1 = -5.70498872745e-3, c2 = 2.06390887954e-2, c3 = -5.37397155531e-2,
                c4 = 1.33314422036e-1, c5 = -3.33332819422e-1;
    precise float poly = ((((c1 * z + c2) * z + c3) * z + c4) * z + c5) * z;
    precise float tv = poly * x + x;
    precise float s2 = 1.0 - tv * tv;
    t = tv;
    sech2 = s2;
  } else {
    precise float e = 2.0 / (exp(2.0 * ax) + 1.0);  // exp overflow -> e = 0 -> tanh = 1
    precise float tv = 1.0 - e;
    precise float s2 = e * (2.0 - e);
    t = x < 0.0 ? -tv : tv;
    sech2 = s2;
  }
}

// Compensated summation (kahan.glsl). The VEC flavour runs VEC_WIDTH independent chains
// (shorter dependency chains on CPU drivers); kahan_total() folds them.
#include "kahan.glsl"
#if VEC_WIDTH == 4
float kahan_total(vec4 s, vec4 c) {
  precise float t = ((s.x - c.x) + (s.y - c.y)) + ((s.z - c.z) + (s.w - c.w));
  return t;
}
#else
float kahan_total(float s, float c) {
  precise float t = s - c;
  return t;
}
#endif

// Compensated (Kahan) summation, shared by the reduce_* and quant_* shaders.
// `precise` keeps the compiler from folding the correction (t - s) - y to 0.
#ifndef VKQAT_KAHAN_GLSL
#define VKQAT_KAHAN_GLSL
void kahan_add(inout float s, inout float c, float v) {
  precise float y = v - c;
  precise float t = s + y;
  precise float nc = (t - s) - y;
  c = nc;
  s = t;
}
void kahan_add(inout vec4 s, inout vec4 c, vec4 v) {
  precise vec4 y = v - c;
  precise vec4 t = s + y;
  precise vec4 nc = (t - s) - y;
  c = nc;
  s = t;
}
#endif

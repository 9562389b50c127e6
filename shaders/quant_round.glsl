// The rounding every quantizer shares (src/quant/common.h is its C++ twin). Included by
// quant_common.glsl and by kernels of other families that apply a quantizer in their own
// pass (batchnorm2d_train_quant).
// Smallest step size / clipping level used (alpha, LSQ s, min-max scale): a dead channel or
// an SGD step through zero must not turn the network into inf/NaN.
#ifndef VKQAT_QUANT_ROUND_GLSL
#define VKQAT_QUANT_ROUND_GLSL
const float MIN_SCALE = 1e-8;

// Round half away from zero. GLSL round() is implementation-defined at .5; this is exact:
// abs(x) + 0.5 is one correctly rounded add, floor and sign are exact.
float round_half_away(float x) {
  precise float a = abs(x) + 0.5;
  return sign(x) * floor(a);
}
#endif

#version 450
#extension GL_GOOGLE_include_directive : require
// Partial sums of |x|, float elements. See quant_abssum.glsl.
#define VEC_WIDTH 1
#include "quant_abssum.glsl"

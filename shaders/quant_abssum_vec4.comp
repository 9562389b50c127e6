#version 450
#extension GL_GOOGLE_include_directive : require
// Partial sums of |x|, vec4 elements. See quant_abssum.glsl.
#define VEC_WIDTH 4
#include "quant_abssum.glsl"

#version 450
#extension GL_GOOGLE_include_directive : require
// Min-max observer (min, max partials), vec4 elements. See quant_minmax.glsl.
#define VEC_WIDTH 4
#define MINMAX_KERNEL 3
#include "quant_minmax.glsl"

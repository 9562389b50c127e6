#version 450
#extension GL_GOOGLE_include_directive : require
// Min-max asymmetric activations, backward, float elements. See quant_minmax.glsl.
#define VEC_WIDTH 1
#define MINMAX_KERNEL 2
#include "quant_minmax.glsl"

#version 450
#extension GL_GOOGLE_include_directive : require
// DoReFa activations, backward, vec4 elements. See quant_dorefa_a.glsl.
#define VEC_WIDTH 4
#define DOREFA_BACKWARD 1
#include "quant_dorefa_a.glsl"

#version 450
#extension GL_GOOGLE_include_directive : require
// DoReFa activations, backward, float elements. See quant_dorefa_a.glsl.
#define VEC_WIDTH 1
#define DOREFA_BACKWARD 1
#include "quant_dorefa_a.glsl"

#version 450
#extension GL_GOOGLE_include_directive : require
// LSQ, forward, vec4 elements. See quant_lsq.glsl.
#define VEC_WIDTH 4
#define LSQ_BACKWARD 0
#include "quant_lsq.glsl"

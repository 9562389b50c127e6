#version 450
#extension GL_GOOGLE_include_directive : require
// LSQ, forward, float elements. See quant_lsq.glsl.
#define VEC_WIDTH 1
#define LSQ_BACKWARD 0
#include "quant_lsq.glsl"

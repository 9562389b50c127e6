#version 450
#extension GL_GOOGLE_include_directive : require
// SAT, forward (w* = wq * factor). See quant_sat.glsl.
#define VEC_WIDTH 1
#define SAT_BACKWARD 0
#include "quant_sat.glsl"

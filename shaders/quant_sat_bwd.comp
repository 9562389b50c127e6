#version 450
#extension GL_GOOGLE_include_directive : require
// SAT, backward (dwq = dw* * factor). See quant_sat.glsl.
#define VEC_WIDTH 1
#define SAT_BACKWARD 1
#include "quant_sat.glsl"

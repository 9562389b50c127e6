#version 450
// dx (+)= dL/dx for 1x1 kernels without padding, CPU drivers (see conv2d_1x1_body.glsl).
#extension GL_GOOGLE_include_directive : require
#define BWD_DATA 1
layout(std430, binding = 3) buffer Outf { float outf[]; };  // read when accumulating
layout(std430, binding = 4) buffer Out4 { vec4 out4[]; };
#include "conv2d_1x1_body.glsl"

#version 450
// y = conv2d(x, w) for 1x1 kernels without padding, CPU drivers (see conv2d_1x1_body.glsl).
#extension GL_GOOGLE_include_directive : require
#define BWD_DATA 0
layout(std430, binding = 3) writeonly buffer Outf { float outf[]; };
layout(std430, binding = 4) writeonly buffer Out4 { vec4 out4[]; };
#include "conv2d_1x1_body.glsl"

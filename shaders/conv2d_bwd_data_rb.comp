#version 450
// dx (+)= conv2d_transpose(dy, w), register-blocked variant for CPU drivers (see
// conv2d_rb_body.glsl). dx is read when accumulating.
#extension GL_GOOGLE_include_directive : require
#define BWD_DATA 1
layout(std430, binding = 3) buffer Outf { float outf[]; };
layout(std430, binding = 4) buffer Out4 { vec4 out4[]; };
#include "conv2d_rb_body.glsl"

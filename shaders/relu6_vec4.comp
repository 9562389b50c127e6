#version 450
// y = min(max(x, 0), 6), vec4 elements.
#extension GL_GOOGLE_include_directive : require
#define VEC_WIDTH 4
#define RELU_BACKWARD 0
#define RELU_CAP 6.0
#include "relu_common.glsl"

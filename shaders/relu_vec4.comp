#version 450
// y = max(x, 0), vec4 elements.
#extension GL_GOOGLE_include_directive : require
#define VEC_WIDTH 4
#define RELU_BACKWARD 0
#include "relu_common.glsl"

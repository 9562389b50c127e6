#version 450
// y = max(x, 0), float elements (any count).
#extension GL_GOOGLE_include_directive : require
#define VEC_WIDTH 1
#define RELU_BACKWARD 0
#include "relu_common.glsl"

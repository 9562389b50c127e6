#version 450
// y = min(max(x, 0), 6), float elements (any count).
#extension GL_GOOGLE_include_directive : require
#define VEC_WIDTH 1
#define RELU_BACKWARD 0
#define RELU_CAP 6.0
#include "relu_common.glsl"

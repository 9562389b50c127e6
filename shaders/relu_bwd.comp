#version 450
// dx (+)= dy * [t > 0], float elements (any count).
#extension GL_GOOGLE_include_directive : require
#define VEC_WIDTH 1
#define RELU_BACKWARD 1
#include "relu_common.glsl"

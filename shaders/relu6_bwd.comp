#version 450
// dx (+)= dy * [0 < x < 6], float elements (any count).
#extension GL_GOOGLE_include_directive : require
#define VEC_WIDTH 1
#define RELU_BACKWARD 1
#define RELU_CAP 6.0
#include "relu_common.glsl"

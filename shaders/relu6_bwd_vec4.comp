#version 450
// dx (+)= dy * [0 < x < 6], vec4 elements.
#extension GL_GOOGLE_include_directive : require
#define VEC_WIDTH 4
#define RELU_BACKWARD 1
#define RELU_CAP 6.0
#include "relu_common.glsl"

#version 450
// y = a + b, float elements (any count).
#extension GL_GOOGLE_include_directive : require
#define VEC_WIDTH 1
#define ADD_OP ADD_FORWARD
#include "add_common.glsl"

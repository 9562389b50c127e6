#version 450
// y = a + b, vec4 elements.
#extension GL_GOOGLE_include_directive : require
#define VEC_WIDTH 4
#define ADD_OP ADD_FORWARD
#include "add_common.glsl"

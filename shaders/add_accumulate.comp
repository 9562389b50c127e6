#version 450
// dst += scale * src, float elements (any count).
#extension GL_GOOGLE_include_directive : require
#define VEC_WIDTH 1
#define ADD_OP ADD_ACCUMULATE
#include "add_common.glsl"

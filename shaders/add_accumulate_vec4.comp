#version 450
// dst += scale * src, vec4 elements.
#extension GL_GOOGLE_include_directive : require
#define VEC_WIDTH 4
#define ADD_OP ADD_ACCUMULATE
#include "add_common.glsl"

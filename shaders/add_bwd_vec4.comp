#version 450
// da (+)= dy, db (+)= dy, vec4 elements.
#extension GL_GOOGLE_include_directive : require
#define VEC_WIDTH 4
#define ADD_OP ADD_BACKWARD
#include "add_common.glsl"

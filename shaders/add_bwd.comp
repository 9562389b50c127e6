#version 450
// da (+)= dy, db (+)= dy, float elements (any count).
#extension GL_GOOGLE_include_directive : require
#define VEC_WIDTH 1
#define ADD_OP ADD_BACKWARD
#include "add_common.glsl"

#version 450
// General max pool forward (k x k, stride, pad): see pool_max2d_common.glsl.
#extension GL_GOOGLE_include_directive : require
#define POOL_BACKWARD 0
#include "pool_max2d_common.glsl"

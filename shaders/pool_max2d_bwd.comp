#version 450
// General max pool backward (k x k, stride, pad): see pool_max2d_common.glsl.
#extension GL_GOOGLE_include_directive : require
#define POOL_BACKWARD 1
#include "pool_max2d_common.glsl"

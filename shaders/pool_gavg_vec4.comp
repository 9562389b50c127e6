#version 450
// Global average pool, vec4 elements: see pool_common.glsl.
#extension GL_GOOGLE_include_directive : require
#define VEC_WIDTH 4
#define POOL_KERNEL GAVG
#include "pool_common.glsl"

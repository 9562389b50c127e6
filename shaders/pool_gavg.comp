#version 450
// Global average pool, float elements: see pool_common.glsl.
#extension GL_GOOGLE_include_directive : require
#define VEC_WIDTH 1
#define POOL_KERNEL GAVG
#include "pool_common.glsl"

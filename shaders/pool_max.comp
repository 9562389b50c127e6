#version 450
// Max pool 2x2 stride 2, float elements: see pool_common.glsl.
#extension GL_GOOGLE_include_directive : require
#define VEC_WIDTH 1
#define POOL_KERNEL MAX
#include "pool_common.glsl"

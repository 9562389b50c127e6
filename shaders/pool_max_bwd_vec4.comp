#version 450
// Max pool 2x2 stride 2 backward, vec4 elements: see pool_common.glsl.
#extension GL_GOOGLE_include_directive : require
#define VEC_WIDTH 4
#define POOL_KERNEL MAX_BWD
#include "pool_common.glsl"

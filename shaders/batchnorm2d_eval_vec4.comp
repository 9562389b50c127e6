#version 450
// BatchNorm2d eval forward, vec4 elements (H*W % 4 == 0): see batchnorm2d_common.glsl.
#extension GL_GOOGLE_include_directive : require
#define VEC_WIDTH 4
#define BN_KERNEL BN_EVAL
#include "batchnorm2d_common.glsl"

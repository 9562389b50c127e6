#version 450
// BatchNorm2d training forward, vec4 elements (H*W % 4 == 0): see batchnorm2d_common.glsl.
#extension GL_GOOGLE_include_directive : require
#define VEC_WIDTH 4
#define BN_KERNEL BN_TRAIN
#include "batchnorm2d_common.glsl"

#version 450
// BatchNorm2d training forward plus a residual, y = relu?(bn(x) + res), float elements: see
// batchnorm2d_common.glsl.
#extension GL_GOOGLE_include_directive : require
#define VEC_WIDTH 1
#define BN_KERNEL BN_TRAIN
#define BN_RESIDUAL 1
#include "batchnorm2d_common.glsl"

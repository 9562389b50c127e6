#version 450
// BatchNorm2d training forward plus a residual, y = bn(x) + res, and a uniform activation
// quantizer of that sum, q = Q(y), in one pass, vec4 elements: see batchnorm2d_common.glsl.
#extension GL_GOOGLE_include_directive : require
#define VEC_WIDTH 4
#define BN_KERNEL BN_TRAIN
#define BN_QUANT 1
#define BN_RESIDUAL 1
#include "batchnorm2d_common.glsl"

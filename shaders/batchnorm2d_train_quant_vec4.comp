#version 450
// BatchNorm2d training forward + a uniform activation quantizer in the same pass, vec4 elements:
// see batchnorm2d_common.glsl.
#extension GL_GOOGLE_include_directive : require
#define VEC_WIDTH 4
#define BN_KERNEL BN_TRAIN
#define BN_QUANT 1
#include "batchnorm2d_common.glsl"

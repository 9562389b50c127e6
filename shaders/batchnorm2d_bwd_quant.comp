#version 450
// BatchNorm2d training backward through a PACT quantizer epilogue (its STE mask and clip
// gradient in the same pass): see batchnorm2d_common.glsl.
#extension GL_GOOGLE_include_directive : require
#define VEC_WIDTH 1
#define BN_KERNEL BN_BACKWARD
#define BN_QUANT 1
#include "batchnorm2d_common.glsl"

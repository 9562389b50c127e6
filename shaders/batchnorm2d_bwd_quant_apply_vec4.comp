#version 450
// BatchNorm2d two-level backward through a PACT epilogue, pass 3 (dx per chunk), vec4 elements: see batchnorm2d_common.glsl.
#extension GL_GOOGLE_include_directive : require
#define VEC_WIDTH 4
#define BN_KERNEL BN_GRAD_APPLY
#define BN_QUANT 1
#include "batchnorm2d_common.glsl"

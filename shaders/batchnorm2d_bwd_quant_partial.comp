#version 450
// BatchNorm2d two-level backward through a PACT epilogue, pass 1, float elements: see batchnorm2d_common.glsl.
#extension GL_GOOGLE_include_directive : require
#define VEC_WIDTH 1
#define BN_KERNEL BN_GRAD_PARTIAL
#define BN_QUANT 1
#include "batchnorm2d_common.glsl"

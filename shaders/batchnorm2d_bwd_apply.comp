#version 450
// BatchNorm2d two-level backward, pass 3 (dx per chunk), float elements: see batchnorm2d_common.glsl.
#extension GL_GOOGLE_include_directive : require
#define VEC_WIDTH 1
#define BN_KERNEL BN_GRAD_APPLY
#include "batchnorm2d_common.glsl"

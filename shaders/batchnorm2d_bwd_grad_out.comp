#version 450
// BatchNorm2d training backward through a fused ReLU that also writes the ReLU's input
// gradient (for the other consumer of a residual sum): see batchnorm2d_common.glsl.
#extension GL_GOOGLE_include_directive : require
#define VEC_WIDTH 1
#define BN_KERNEL BN_BACKWARD
#define BN_GRAD_OUT 1
#include "batchnorm2d_common.glsl"

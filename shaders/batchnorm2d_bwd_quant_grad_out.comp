#version 450
// BatchNorm2d training backward through a PACT quantizer epilogue that also writes the
// gradient of BN's output (for a residual sum's shortcut): see batchnorm2d_common.glsl.
#extension GL_GOOGLE_include_directive : require
#define VEC_WIDTH 1
#define BN_KERNEL BN_BACKWARD
#define BN_QUANT 1
#define BN_GRAD_OUT 1
#include "batchnorm2d_common.glsl"

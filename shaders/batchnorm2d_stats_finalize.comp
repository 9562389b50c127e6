#version 450
// BatchNorm2d two-level statistics, pass 2 (mean, inv_std, running stats per channel): see batchnorm2d_common.glsl.
#extension GL_GOOGLE_include_directive : require
#define VEC_WIDTH 1
#define BN_KERNEL BN_STATS_FINALIZE
#include "batchnorm2d_common.glsl"

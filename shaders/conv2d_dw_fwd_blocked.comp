#version 450
// Depthwise forward: see conv2d_dw_blocked_body.glsl.
#extension GL_GOOGLE_include_directive : require
#define DW_KERNEL DW_FWD
#include "conv2d_dw_blocked_body.glsl"

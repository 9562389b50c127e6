#version 450
// Depthwise backward-weight (split over channel x chunk): see conv2d_dw_blocked_body.glsl.
#extension GL_GOOGLE_include_directive : require
#define DW_KERNEL DW_BWD_WEIGHT
#include "conv2d_dw_blocked_body.glsl"

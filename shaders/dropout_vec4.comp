#version 450
// Dropout forward / backward (out (+)= in * mask * scale), vec4 elements: see dropout_common.glsl.
#extension GL_GOOGLE_include_directive : require
#define VEC_WIDTH 4
#include "dropout_common.glsl"

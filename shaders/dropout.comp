#version 450
// Dropout forward / backward (out (+)= in * mask * scale), float elements: see dropout_common.glsl.
#extension GL_GOOGLE_include_directive : require
#define VEC_WIDTH 1
#include "dropout_common.glsl"

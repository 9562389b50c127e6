#version 450
// Softmax cross-entropy without the gradient (evaluation): loss and correct count only.
#extension GL_GOOGLE_include_directive : require
#define WITH_GRAD 0
#include "cross_entropy_common.glsl"

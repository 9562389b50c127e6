#version 450
// SGD update, one float per invocation (any size). See sgd_common.glsl.
#extension GL_GOOGLE_include_directive : require
#define T float
#include "sgd_common.glsl"

#version 450
// SGD update, one vec4 per invocation (element counts divisible by 4). See sgd_common.glsl.
#extension GL_GOOGLE_include_directive : require
#define T vec4
#include "sgd_common.glsl"

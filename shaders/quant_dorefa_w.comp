#version 450
#extension GL_GOOGLE_include_directive : require
// DoReFa weights, forward. See quant_dorefa_w.glsl.
#define DOREFA_BACKWARD 0
#include "quant_dorefa_w.glsl"

#version 450
#extension GL_GOOGLE_include_directive : require
// PACT, forward, float elements. See quant_pact.glsl.
#define VEC_WIDTH 1
#define PACT_BACKWARD 0
#include "quant_pact.glsl"

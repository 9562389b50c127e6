#version 450
#extension GL_GOOGLE_include_directive : require
// Symmetric (signed) PACT, backward (dx + dalpha partials), vec4 elements. See quant_pact.glsl.
#define VEC_WIDTH 4
#define PACT_BACKWARD 1
#define PACT_SIGNED 1
#include "quant_pact.glsl"

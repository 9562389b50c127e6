#version 450
// Softmax cross-entropy: loss, correct count and dlogits = (softmax - onehot) * scale / N.
#extension GL_GOOGLE_include_directive : require
#define WITH_GRAD 1
layout(std430, binding = 4) writeonly buffer DZb { float dlogits[]; };
#include "cross_entropy_common.glsl"

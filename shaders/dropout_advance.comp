#version 450
// step[0] += 1: moves every dropout mask of a recorded training step on to the next step
// (see src/nn/ops/dropout.h). One invocation.
layout(local_size_x = 1) in;
layout(std430, binding = 0) buffer Stepb { uint step[]; };

void main() { step[0] += 1u; }

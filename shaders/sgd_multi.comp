#version 450
// Multi-tensor SGD: one dispatch updates many parameter tensors (the same formula as
// sgd_common.glsl, element by element, so the results are bit-identical to one sgd
// dispatch per tensor). Bindings 0-2 are spans of the buffers that hold the weights,
// gradients and momentum buffers; the chunk table says where each workgroup's elements lie.
// Table entry per workgroup (5 uints): w offset, grad offset, momentum offset (in floats,
// relative to the bound spans), element count (<= elements per workgroup), weight decay
// (float bits; 0 for BN parameters, biases and quantizer parameters).
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;

layout(std430, binding = 0) buffer Wb { float w[]; };
layout(std430, binding = 1) readonly buffer Gb { float grad[]; };
layout(std430, binding = 2) buffer Bufb { float buf[]; };
layout(std430, binding = 3) readonly buffer Sb { float step_params[]; };
layout(std430, binding = 4) readonly buffer Tb { uint table[]; };

layout(push_constant) uniform Params {
  uint chunks;
  uint lr_index;
  float momentum;
  uint nesterov;
} p;

void main() {
  uint chunk = gl_WorkGroupID.x;
  if (chunk >= p.chunks) return;
  uint wo = table[5u * chunk], go = table[5u * chunk + 1u], mo = table[5u * chunk + 2u];
  uint n = table[5u * chunk + 3u];
  float wd = uintBitsToFloat(table[5u * chunk + 4u]);
  float lr = step_params[p.lr_index];
  // Strided by the workgroup size: neighbouring invocations touch neighbouring floats.
  for (uint i = gl_LocalInvocationID.x; i < n; i += gl_WorkGroupSize.x) {
    float wi = w[wo + i];
    float g = grad[go + i] + wd * wi;
    float m = p.momentum * buf[mo + i] + g;
    buf[mo + i] = m;
    float d = p.nesterov != 0u ? g + p.momentum * m : m;
    w[wo + i] = wi - lr * d;
  }
}

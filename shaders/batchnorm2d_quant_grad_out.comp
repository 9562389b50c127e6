#version 450
// The gradient that reaches a quantized BN's output, g = dq [0 <= y < clip] (+ extra), on
// its own: the unfused half of batchnorm2d_bwd_quant_grad_out (13 storage buffers) for
// devices with fewer per stage (Android's 12), which run batchnorm2d_bwd_quant (12) and
// then this. Bit for bit the g of the fused kernel (the same pact_grad, the same add).
// g_out may alias extra: each element is read, then written, by one invocation.
#extension GL_GOOGLE_include_directive : require
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
layout(std430, binding = 0) readonly buffer Yb { float y[]; };
layout(std430, binding = 1) readonly buffer DQb { float dq[]; };
layout(std430, binding = 2) readonly buffer Clipb { float clip_buf[]; };
layout(std430, binding = 3) readonly buffer Eb { float extra[]; };  // read when p.extra
layout(std430, binding = 4) writeonly buffer GOb { float g_out[]; };
layout(push_constant) uniform Params {
  uint count;
  float levels, inv_levels;
  uint extra;
} p;
#include "pact_grad.glsl"

void main() {
  uint i = gl_GlobalInvocationID.x;
  if (i >= p.count) return;
  float clip = max(clip_buf[0], MIN_SCALE), scale = p.levels / clip, unused;
  float g = pact_grad(y[i], dq[i], clip, scale, p.inv_levels, false, unused);
  g_out[i] = p.extra != 0u ? g + extra[i] : g;
}

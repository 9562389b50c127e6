#version 450
// Depthwise backward-data: one dx element per invocation, gathering the dy positions whose
// window covers it.
#extension GL_GOOGLE_include_directive : require
#include "conv2d_common.glsl"
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
layout(std430, binding = 0) readonly buffer Dyb { float dy[]; };
layout(std430, binding = 1) readonly buffer Wb { float w[]; };
layout(std430, binding = 2) buffer Dxb { float dx[]; };  // read when accumulating

void main() {
  const int i = int(gl_GlobalInvocationID.x);
  if (i >= p.n * p.c_in * p.h * p.w) return;
  const int iw = i % p.w, ih = (i / p.w) % p.h, nc = i / (p.w * p.h), c = nc % p.c_in;
  float acc = 0.0;
  for (int kh = 0; kh < p.kh; ++kh) {
    const int th = ih + p.pad - kh;
    if (th < 0 || th % p.stride != 0 || th / p.stride >= p.oh) continue;
    for (int kw = 0; kw < p.kw; ++kw) {
      const int tw = iw + p.pad - kw;
      if (tw < 0 || tw % p.stride != 0 || tw / p.stride >= p.ow) continue;
      acc += w[(c * p.kh + kh) * p.kw + kw] * dy[(nc * p.oh + th / p.stride) * p.ow + tw / p.stride];
    }
  }
  dx[i] = acc + (p.accumulate != 0 ? dx[i] : 0.0);
}

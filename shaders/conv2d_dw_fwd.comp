#version 450
// Depthwise forward (groups == c_in == c_out, w [c, 1, kh, kw]): one output per invocation.
#extension GL_GOOGLE_include_directive : require
#include "conv2d_common.glsl"
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
layout(std430, binding = 0) readonly buffer Xb { float x[]; };
layout(std430, binding = 1) readonly buffer Wb { float w[]; };
layout(std430, binding = 2) writeonly buffer Yb { float y[]; };

void main() {
  const int i = int(gl_GlobalInvocationID.x);
  if (i >= p.n * p.c_out * p.oh * p.ow) return;
  const int ow = i % p.ow, oh = (i / p.ow) % p.oh, nc = i / (p.ow * p.oh), c = nc % p.c_out;
  float acc = 0.0;
  for (int kh = 0; kh < p.kh; ++kh) {
    const int ih = oh * p.stride - p.pad + kh;
    if (ih < 0 || ih >= p.h) continue;
    for (int kw = 0; kw < p.kw; ++kw) {
      const int iw = ow * p.stride - p.pad + kw;
      if (iw >= 0 && iw < p.w) acc += w[(c * p.kh + kh) * p.kw + kw] * x[(nc * p.h + ih) * p.w + iw];
    }
  }
  y[i] = acc;
}

#version 450
// Depthwise backward-weight: one dw element (c, kh, kw) per invocation, reducing over all
// n * oh * ow positions.
#extension GL_GOOGLE_include_directive : require
#include "conv2d_common.glsl"
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
layout(std430, binding = 0) readonly buffer Xb { float x[]; };
layout(std430, binding = 1) readonly buffer Dyb { float dy[]; };
layout(std430, binding = 2) buffer Dwb { float dw[]; };  // read when accumulating

void main() {
  const int i = int(gl_GlobalInvocationID.x);
  if (i >= p.c_out * p.kh * p.kw) return;
  const int kw = i % p.kw, kh = (i / p.kw) % p.kh, c = i / (p.kw * p.kh);
  float acc = 0.0;
  for (int n = 0; n < p.n; ++n)
    for (int oh = 0; oh < p.oh; ++oh) {
      const int ih = oh * p.stride - p.pad + kh;
      if (ih < 0 || ih >= p.h) continue;
      for (int ow = 0; ow < p.ow; ++ow) {
        const int iw = ow * p.stride - p.pad + kw;
        if (iw >= 0 && iw < p.w)
          acc += dy[((n * p.c_out + c) * p.oh + oh) * p.ow + ow] * x[((n * p.c_in + c) * p.h + ih) * p.w + iw];
      }
    }
  dw[i] = acc + (p.accumulate != 0 ? dw[i] : 0.0);
}

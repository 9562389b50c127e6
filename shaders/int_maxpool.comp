#version 450
// Max pool on integer codes (src/quant/int_model.h): the requantization is monotone, so the
// max of the codes is the code of the max. Padding never wins (codes are >= 0 and every
// window holds a pixel). One invocation per output code.
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
layout(std430, binding = 0) readonly buffer Xb { int x[]; };
layout(std430, binding = 1) writeonly buffer Yb { int y[]; };
layout(push_constant) uniform Params { int planes, h, w, oh, ow, k, stride, pad; } p;

void main() {
  const int idx = int(gl_GlobalInvocationID.x);
  if (idx >= p.planes * p.oh * p.ow) return;
  const int q = idx % p.ow, r = (idx / p.ow) % p.oh, plane = idx / (p.ow * p.oh);
  int best = 0;
  for (int kh = 0; kh < p.k; ++kh) {
    const int iy = r * p.stride - p.pad + kh;
    if (iy < 0 || iy >= p.h) continue;
    for (int kw = 0; kw < p.k; ++kw) {
      const int ix = q * p.stride - p.pad + kw;
      if (ix >= 0 && ix < p.w) best = max(best, x[(plane * p.h + iy) * p.w + ix]);
    }
  }
  y[idx] = best;
}

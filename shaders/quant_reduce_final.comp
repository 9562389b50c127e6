#version 450
// Second pass of the quant reductions: one workgroup per channel merges that channel's P
// partials in a fixed order (deterministic, no atomics). One barrier.
//   MODE_SUM:    out[c] = max((accumulate ? out[c] : 0) + scale * sum(partials[c][*]), lower)
//   MODE_MINMAX: partials are (min, max) pairs; out is a running range [2, C] (row 0 min,
//                row 1 max). The first observation (min > max, e.g. (+inf, -inf)) is copied;
//                later ones move the range by momentum: r += momentum * (batch - r).
#extension GL_GOOGLE_include_directive : require
#define VEC_WIDTH 1
#include "quant_common.glsl"

layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;

layout(std430, binding = 0) readonly buffer Partb { float partials[]; };
layout(std430, binding = 1) buffer Outb { float outv[]; };  // read when accumulating / EMA

const uint MODE_SUM = 0u, MODE_MINMAX = 1u;

layout(push_constant) uniform Params {
  uint partials;
  uint mode;
  uint accumulate;
  uint channels;
  float scale;
  float lower;
  float momentum;
} p;

shared float sh_a[gl_WorkGroupSize.x];
shared float sh_b[gl_WorkGroupSize.x];

void main() {
  uint c = gl_WorkGroupID.x;
  uint t = gl_LocalInvocationID.x;
  uint base = c * p.partials;
  // sum: (a, b) = Kahan (sum, compensation); minmax: (a, b) = (min, max)
  float a = p.mode == MODE_SUM ? 0.0 : uintBitsToFloat(0x7f800000u);
  float b = p.mode == MODE_SUM ? 0.0 : uintBitsToFloat(0xff800000u);
  for (uint g = t; g < p.partials; g += gl_WorkGroupSize.x) {
    if (p.mode == MODE_SUM) {
      kahan_add(a, b, partials[base + g]);
    } else {
      a = min(a, partials[2u * (base + g)]);
      b = max(b, partials[2u * (base + g) + 1u]);
    }
  }
  if (p.mode == MODE_SUM) {
    precise float s = a - b;
    a = s;
  }
  sh_a[t] = a;
  sh_b[t] = b;
  barrier();
  if (t != 0u) return;

  if (p.mode == MODE_SUM) {
    float s = 0.0, comp = 0.0;
    for (uint i = 0; i < gl_WorkGroupSize.x; ++i) kahan_add(s, comp, sh_a[i]);
    precise float total = p.scale * (s - comp);
    precise float v = p.accumulate != 0u ? outv[c] + total : total;
    outv[c] = max(v, p.lower);
  } else {
    float lo = sh_a[0], hi = sh_b[0];
    for (uint i = 1; i < gl_WorkGroupSize.x; ++i) {
      lo = min(lo, sh_a[i]);
      hi = max(hi, sh_b[i]);
    }
    float rlo = outv[c], rhi = outv[p.channels + c];
    if (rlo > rhi) {  // first observation
      outv[c] = lo;
      outv[p.channels + c] = hi;
    } else {
      precise float nlo = rlo + p.momentum * (lo - rlo);
      precise float nhi = rhi + p.momentum * (hi - rhi);
      outv[c] = nlo;
      outv[p.channels + c] = nhi;
    }
  }
}

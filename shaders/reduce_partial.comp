#version 450
// Pass 1 of every reduction: the input is viewed as [outer, channels, inner] (inner in units
// of vec4 or float); invocation (c, g) folds units g, g+P, g+2P, ... of channel c's
// outer*inner units into registers and writes one partial. No shared memory, no barriers.
#extension GL_GOOGLE_include_directive : require
#include "reduce_common.glsl"

layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
layout(constant_id = 3) const int OP = OP_SUM;
layout(constant_id = 4) const int VEC4 = 1;  // 1: units are vec4 (binding 0), 0: floats (binding 1)

// Both bindings are the same input tensor; only the one VEC4 selects is read.
layout(std430, binding = 0) readonly buffer X4b { vec4 x4[]; };
layout(std430, binding = 1) readonly buffer X1b { float x1[]; };
layout(std430, binding = 2) writeonly buffer Partb { float partials[]; };

layout(push_constant) uniform Params {
  uint outer;
  uint channels;
  uint inner;       // units
  uint partials;    // P, partials per channel
  uint step_outer;  // P / inner
  uint step_inner;  // P % inner
} p;

vec4 sum4 = vec4(0), comp4 = vec4(0), mean4 = vec4(0), m24 = vec4(0), max4 = vec4(0);
float sum1 = 0, comp1 = 0, mean1 = 0, m21 = 0, max1 = 0, count = 0;

void accumulate(uint idx) {
  if (VEC4 != 0) {
    vec4 v = x4[idx];
    if (OP == OP_SUM) {
      kahan_add(sum4, comp4, v);
    } else if (OP == OP_MEANVAR) {  // Welford, four independent streams
      count += 1.0;
      vec4 d = v - mean4;
      mean4 += d * (1.0 / count);
      m24 += d * (v - mean4);
    } else {
      max4 = max(max4, abs(v));
    }
  } else {
    float v = x1[idx];
    if (OP == OP_SUM) {
      kahan_add(sum1, comp1, v);
    } else if (OP == OP_MEANVAR) {
      count += 1.0;
      float d = v - mean1;
      mean1 += d / count;
      m21 += d * (v - mean1);
    } else {
      max1 = max(max1, abs(v));
    }
  }
}

void main() {
  uint gid = gl_GlobalInvocationID.x;
  if (gid >= p.channels * p.partials) return;
  uint c = gid / p.partials;
  uint g = gid - c * p.partials;
  uint total = p.outer * p.inner;

  if (p.channels == 1u) {  // whole tensor: unit index == position
    for (uint j = g; j < total; j += p.partials) accumulate(j);
  } else {
    uint a = g / p.inner, b = g - (g / p.inner) * p.inner;
    for (uint j = g; j < total; j += p.partials) {
      accumulate((a * p.channels + c) * p.inner + b);
      a += p.step_outer;
      b += p.step_inner;
      if (b >= p.inner) {
        b -= p.inner;
        a += 1u;
      }
    }
  }

  if (VEC4 != 0) {  // fold the four lanes into one summary
    if (OP == OP_SUM) {
      precise float s = ((sum4.x - comp4.x) + (sum4.y - comp4.y)) + ((sum4.z - comp4.z) + (sum4.w - comp4.w));
      sum1 = s;
    } else if (OP == OP_MEANVAR) {
      float n = count, n2 = 2.0 * count;
      float mxy = mean4.x, m2xy = m24.x, nxy = n;
      chan_merge(nxy, mxy, m2xy, n, mean4.y, m24.y);
      float mzw = mean4.z, m2zw = m24.z, nzw = n;
      chan_merge(nzw, mzw, m2zw, n, mean4.w, m24.w);
      chan_merge(nxy, mxy, m2xy, n2, mzw, m2zw);
      mean1 = mxy;
      m21 = m2xy;
    } else {
      max1 = max(max(max4.x, max4.y), max(max4.z, max4.w));
    }
  } else if (OP == OP_SUM) {
    sum1 = sum1 - comp1;
  }

  if (OP == OP_SUM) {
    partials[gid] = sum1;
  } else if (OP == OP_MEANVAR) {
    partials[2u * gid] = mean1;
    partials[2u * gid + 1u] = m21;
  } else {
    partials[gid] = max1;
  }
}

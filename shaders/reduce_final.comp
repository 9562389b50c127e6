#version 450
// Pass 2 of every reduction: one workgroup per channel merges that channel's P partials
// (plus, for a whole tensor read as vec4, the last numel % 4 elements) and writes the
// result. One barrier: invocations merge strided partials, invocation 0 merges those.
#extension GL_GOOGLE_include_directive : require
#include "reduce_common.glsl"

layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
layout(constant_id = 3) const int OP = OP_SUM;

layout(std430, binding = 0) readonly buffer Partb { float partials[]; };
layout(std430, binding = 1) readonly buffer X1b { float x1[]; };
layout(std430, binding = 2) writeonly buffer OutAb { float out_a[]; };
layout(std430, binding = 3) writeonly buffer OutBb { float out_b[]; };

const uint MODE_SUM = 0u, MODE_MEAN = 1u, MODE_VAR = 2u, MODE_MEANVAR = 3u, MODE_MAXABS = 4u;

layout(push_constant) uniform Params {
  uint partials;    // P per channel
  uint units;       // units per channel read by pass 1
  uint unit_elems;  // 4 (vec4) or 1
  uint tail_begin;  // elements pass 1 did not read: x1[tail_begin .. tail_begin + tail_count)
  uint tail_count;
  uint out_a_index;
  uint out_b_index;
  uint mode;
  float count;  // elements per channel
  float ddof;   // 0: population variance, 1: unbiased
} p;

shared float sh_n[gl_WorkGroupSize.x];
shared float sh_a[gl_WorkGroupSize.x];
shared float sh_b[gl_WorkGroupSize.x];

// Units that pass-1 invocation g of a channel read.
float partial_count(uint g) {
  return p.units > g ? float(((p.units - g - 1u) / p.partials + 1u) * p.unit_elems) : 0.0;
}

void main() {
  uint c = gl_WorkGroupID.x;
  uint t = gl_LocalInvocationID.x;
  uint base = c * p.partials;
  // sum: (a, b) = Kahan (sum, compensation); meanvar: (n, a, b) = (count, mean, M2); maxabs: a
  float n = 0, a = 0, b = 0;
  for (uint g = t; g < p.partials; g += gl_WorkGroupSize.x) {
    if (OP == OP_SUM) {
      kahan_add(a, b, partials[base + g]);
    } else if (OP == OP_MEANVAR) {
      chan_merge(n, a, b, partial_count(g), partials[2u * (base + g)], partials[2u * (base + g) + 1u]);
    } else {
      a = max(a, partials[base + g]);
    }
  }
  if (OP == OP_SUM) {
    precise float s = a - b;
    a = s;
  }
  sh_n[t] = n;
  sh_a[t] = a;
  sh_b[t] = b;
  barrier();
  if (t != 0u) return;

  n = 0;
  a = 0;
  b = 0;
  for (uint i = 0; i < gl_WorkGroupSize.x; ++i) {
    if (OP == OP_SUM) {
      kahan_add(a, b, sh_a[i]);
    } else if (OP == OP_MEANVAR) {
      chan_merge(n, a, b, sh_n[i], sh_a[i], sh_b[i]);
    } else {
      a = max(a, sh_a[i]);
    }
  }
  for (uint i = 0; i < p.tail_count; ++i) {
    float v = x1[p.tail_begin + i];
    if (OP == OP_SUM) {
      kahan_add(a, b, v);
    } else if (OP == OP_MEANVAR) {
      chan_merge(n, a, b, 1.0, v, 0.0);
    } else {
      a = max(a, abs(v));
    }
  }
  if (OP == OP_SUM) {
    precise float s = a - b;
    a = s;
  }

  float var = p.count - p.ddof > 0.0 ? b / (p.count - p.ddof) : uintBitsToFloat(0x7fc00000u);
  if (p.mode == MODE_SUM || p.mode == MODE_MAXABS) {
    out_a[p.out_a_index + c] = a;
  } else if (p.mode == MODE_MEAN) {
    out_a[p.out_a_index + c] = a / p.count;
  } else if (p.mode == MODE_VAR) {
    out_a[p.out_a_index + c] = var;
  } else {
    out_a[p.out_a_index + c] = a;
    out_b[p.out_b_index + c] = var;
  }
}

#version 450
// dw (+)= dL/dw for 1x1 kernels without padding, CPU drivers: dw[o][c] = sum over n and
// output pixels p of dy[n][o][p] * x[n][c][pixel under p], a GEMM with a long K = n * oh * ow
// and small M, N. Split-K inside the workgroup: a workgroup owns an MB x CB block of dw,
// its invocations take 4-pixel chunks of K round-robin and keep MB x CB partial sums in
// registers (MB + CB vec4 loads per 16 * MB * CB flops, no shuffles, no barriers in the
// loop); at the end the partials are summed with subgroupAdd and, across subgroups,
// through shared memory after one barrier. This needs no scratch buffer and no second
// dispatch; the blocks give the workgroups (cores) enough independent work for CPU drivers.
// Where the blocks are too few (16 channels: 2 workgroups, which a CPU driver does not
// spread over its threads), SPLITS > 1 also splits the batch over gl_WorkGroupID.z: each
// split writes its partial dw block to dw[z][o][c] and conv2d_split_sum adds them up.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#include "conv2d_common.glsl"

layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
layout(constant_id = 3) const int MB = 8;          // out channels per workgroup
layout(constant_id = 4) const int CB = 8;          // in channels per workgroup
layout(constant_id = 5) const int S = 1;           // stride
layout(constant_id = 6) const int DY_ALIGNED = 1;  // oh * ow % 4 == 0: chunks are whole vec4s
layout(constant_id = 7) const int X_ALIGNED = 1;   // stride 1 and h * w % 4 == 0
layout(constant_id = 8) const int NSG = 64;        // most subgroups a workgroup can hold
layout(constant_id = 9) const int SPLITS = 1;      // batch splits (gl_WorkGroupID.z)

layout(std430, binding = 0) readonly buffer X4 { vec4 x4[]; };
layout(std430, binding = 1) readonly buffer Xf { float xf[]; };
layout(std430, binding = 2) readonly buffer Dy4 { vec4 dy4[]; };
layout(std430, binding = 3) buffer Dw { float dw[]; };  // read when accumulating

shared float partial[NSG * MB * CB];

// The 4 floats at f..f+3 from two aligned vec4s (q clamped to the buffer's last vec4).
vec4 shifted(vec4 a, vec4 b, int sh) {
  return sh == 0 ? a : sh == 1 ? vec4(a.yzw, b.x) : sh == 2 ? vec4(a.zw, b.xy) : vec4(a.w, b.xyz);
}

void main() {
  const int lx = int(gl_WorkGroupSize.x);
  const int c0 = int(gl_WorkGroupID.x) * CB, o0 = int(gl_WorkGroupID.y) * MB;
  const int in_hw = p.h * p.w, out_hw = p.oh * p.ow;
  const int chunks = (out_hw + 3) / 4;
  const int last_xq = (p.n * p.c_in * in_hw + 3) / 4 - 1;
  const int last_dyq = (p.n * p.c_out * out_hw + 3) / 4 - 1;

  float acc[MB * CB];
  [[unroll]] for (int i = 0; i < MB * CB; ++i) acc[i] = 0.0;

  // Items (n, chunk) are taken round-robin; the position advances without integer
  // divisions, which CPU drivers run one lane at a time.
  const int per_split = (p.n + SPLITS - 1) / SPLITS;
  const int n_begin = int(gl_WorkGroupID.z) * per_split, n_end = min(p.n, n_begin + per_split);
  const int n_step = lx / chunks, chunk_step = lx % chunks;
  int n = n_begin + int(gl_LocalInvocationID.x) / chunks, chunk = int(gl_LocalInvocationID.x) % chunks;
  for (; n < n_end; n += n_step, chunk += chunk_step) {
    if (chunk >= chunks) { chunk -= chunks; ++n; if (n >= n_end) break; }
    const int p0 = chunk * 4;
    // dy of the chunk, zero past the plane's end (a clamped channel past c_out is never stored).
    const vec4 valid = vec4(greaterThan(ivec4(out_hw - p0), ivec4(0, 1, 2, 3)));
    vec4 d[MB];
    [[unroll]] for (int m = 0; m < MB; ++m) {
      const int f = (n * p.c_out + min(o0 + m, p.c_out - 1)) * out_hw + p0;
      if (DY_ALIGNED == 1) {
        d[m] = dy4[f >> 2];
      } else {
        const vec4 a = dy4[min(f >> 2, last_dyq)], b = dy4[min((f >> 2) + 1, last_dyq)];
        d[m] = shifted(a, b, f & 3) * valid;
      }
    }
    // Strided: offsets of the 4 pixels inside an x plane (clamped into the plane; their dy
    // is zero); one division per chunk.
    int x_at[4];
    if (S > 1) {
      const int row = p0 / p.ow;
      int col = p0 - row * p.ow;
      [[unroll]] for (int t = 0, r = row; t < 4; ++t, ++col) {
        if (col >= p.ow) { col -= p.ow; ++r; }
        x_at[t] = min(r, p.oh - 1) * S * p.w + col * S;
      }
    }
    vec4 xv[CB];
    [[unroll]] for (int cb = 0; cb < CB; ++cb) {
      const int plane = (n * p.c_in + min(c0 + cb, p.c_in - 1)) * in_hw;
      if (S > 1) {
        [[unroll]] for (int t = 0; t < 4; ++t) xv[cb][t] = xf[plane + x_at[t]];
      } else if (X_ALIGNED == 1) {
        xv[cb] = x4[(plane + p0) >> 2];
      } else {
        const int f = plane + p0;
        xv[cb] = shifted(x4[min(f >> 2, last_xq)], x4[min((f >> 2) + 1, last_xq)], f & 3);
      }
    }
    [[unroll]] for (int m = 0; m < MB; ++m)
      [[unroll]] for (int cb = 0; cb < CB; ++cb) acc[m * CB + cb] += dot(d[m], xv[cb]);
  }

  // Sum the partials: over the subgroup, then over the subgroups through shared memory.
  const int block = MB * CB;
  [[unroll]] for (int i = 0; i < block; ++i) {
    const float s = subgroupAdd(acc[i]);
    if (subgroupElect()) partial[int(gl_SubgroupID) * block + i] = s;
  }
  memoryBarrierShared();
  barrier();
  for (int i = int(gl_LocalInvocationID.x); i < block; i += lx) {
    float s = 0.0;
    for (int g = 0; g < int(gl_NumSubgroups); ++g) s += partial[g * block + i];
    const int o = o0 + i / CB, c = c0 + i % CB;
    if (o >= p.c_out || c >= p.c_in) continue;
    const int idx = o * p.c_in + c;
    if (SPLITS > 1)
      dw[int(gl_WorkGroupID.z) * p.c_out * p.c_in + idx] = s;
    else
      dw[idx] = s + (p.accumulate != 0 ? dw[idx] : 0.0);
  }
}

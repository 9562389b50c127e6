#version 450
// dw (+)= dL/dw for 1x1 kernels without padding, CPU drivers: dw[o][c] = sum over n and
// output pixels p of dy[n][o][p] * x[n][c][pixel under p], a GEMM with a long K = n * oh * ow
// and small M, N. A workgroup owns an MB x CB block of dw. K is cut into "items": the
// planes of the images, each in SEG segments of consecutive 4-pixel chunks; an invocation
// walks whole items, a chunk at a time, keeping MB x CB partial sums in registers (MB + CB
// vec4 loads per 16 * MB * CB flops, no shuffles, no barriers in the loop). Walking a plane
// in order lets an unaligned plane (7x7, 14x14 stride 2) cost one vec4 load per row and
// chunk as well: the aligned vec4 after a chunk is carried into the next one. At the end
// the partials are summed with subgroupAdd and, across subgroups, through shared memory
// after one barrier. SPLITS > 1 spreads the items over gl_WorkGroupID.z too (a CPU driver
// needs enough workgroups to keep its threads busy): each split writes its partial dw
// block to dw[z][o][c] and conv2d_split_sum adds them up.
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
layout(constant_id = 9) const int SPLITS = 1;      // workgroups along z sharing a block
layout(constant_id = 10) const int SEG = 1;        // segments per plane

layout(std430, binding = 0) readonly buffer X4 { vec4 x4[]; };
layout(std430, binding = 1) readonly buffer Xf { float xf[]; };
layout(std430, binding = 2) readonly buffer Dy4 { vec4 dy4[]; };
layout(std430, binding = 3) buffer Dw { float dw[]; };  // read when accumulating

shared float partial[NSG * MB * CB];

// The 4 floats at f..f+3 (sh = f & 3) from the two aligned vec4s that hold them.
vec4 shifted(vec4 a, vec4 b, int sh) {
  return sh == 0 ? a : sh == 1 ? vec4(a.yzw, b.x) : sh == 2 ? vec4(a.zw, b.xy) : vec4(a.w, b.xyz);
}

void main() {
  const int lx = int(gl_WorkGroupSize.x);
  const int c0 = int(gl_WorkGroupID.x) * CB, o0 = int(gl_WorkGroupID.y) * MB;
  const int in_hw = p.h * p.w, out_hw = p.oh * p.ow;
  const int chunks = (out_hw + 3) / 4, seg_chunks = (chunks + SEG - 1) / SEG;
  const int last_xq = (p.n * p.c_in * in_hw + 3) / 4 - 1;
  const int last_dyq = (p.n * p.c_out * out_hw + 3) / 4 - 1;

  float acc[MB * CB];
  [[unroll]] for (int i = 0; i < MB * CB; ++i) acc[i] = 0.0;

  const int items = p.n * SEG, item_step = lx * SPLITS;
  for (int item = int(gl_WorkGroupID.z) * lx + int(gl_LocalInvocationID.x); item < items; item += item_step) {
    const int n = item / SEG, first = (item - n * SEG) * seg_chunks;
    const int end = min(chunks, first + seg_chunks);
    if (first >= end) continue;
    // Plane offsets of the rows (channels past the block's end are clamped; never stored)
    // and, for unaligned planes, the aligned vec4 holding each row's first float.
    int dy_at[MB], x_at[CB];
    vec4 dy_next[MB], x_next[CB];
    [[unroll]] for (int m = 0; m < MB; ++m) {
      dy_at[m] = (n * p.c_out + min(o0 + m, p.c_out - 1)) * out_hw + first * 4;
      if (DY_ALIGNED == 0) dy_next[m] = dy4[min(dy_at[m] >> 2, last_dyq)];
    }
    [[unroll]] for (int cb = 0; cb < CB; ++cb) {
      x_at[cb] = (n * p.c_in + min(c0 + cb, p.c_in - 1)) * in_hw;
      if (S == 1) x_at[cb] += first * 4;
      if (S == 1 && X_ALIGNED == 0) x_next[cb] = x4[min(x_at[cb] >> 2, last_xq)];
    }
    for (int chunk = first; chunk < end; ++chunk) {
      const int p0 = chunk * 4;
      // Pixels past the plane's end read neighbouring data (or buffer padding): zero both
      // factors there so that no stray NaN gets in.
      const bvec4 valid = lessThan(ivec4(p0) + ivec4(0, 1, 2, 3), ivec4(out_hw));
      vec4 d[MB];
      [[unroll]] for (int m = 0; m < MB; ++m) {
        if (DY_ALIGNED == 1) {
          d[m] = dy4[dy_at[m] >> 2];
        } else {
          const vec4 a = dy_next[m];
          dy_next[m] = dy4[min((dy_at[m] >> 2) + 1, last_dyq)];
          d[m] = mix(vec4(0.0), shifted(a, dy_next[m], dy_at[m] & 3), valid);
        }
        dy_at[m] += 4;
      }
      vec4 xv[CB];
      if (S > 1) {
        // Offsets of the 4 pixels inside an x plane (clamped into the plane; their dy is zero).
        int at[4];
        const int row = p0 / p.ow;
        int col = p0 - row * p.ow;
        [[unroll]] for (int t = 0, r = row; t < 4; ++t, ++col) {
          if (col >= p.ow) { col -= p.ow; ++r; }
          at[t] = min(r, p.oh - 1) * S * p.w + col * S;
        }
        [[unroll]] for (int cb = 0; cb < CB; ++cb)
          [[unroll]] for (int t = 0; t < 4; ++t) xv[cb][t] = xf[x_at[cb] + at[t]];
      } else {
        [[unroll]] for (int cb = 0; cb < CB; ++cb) {
          if (X_ALIGNED == 1) {
            xv[cb] = x4[x_at[cb] >> 2];
          } else {
            const vec4 a = x_next[cb];
            x_next[cb] = x4[min((x_at[cb] >> 2) + 1, last_xq)];
            xv[cb] = mix(vec4(0.0), shifted(a, x_next[cb], x_at[cb] & 3), valid);
          }
          x_at[cb] += 4;
        }
      }
      [[unroll]] for (int m = 0; m < MB; ++m)
        [[unroll]] for (int cb = 0; cb < CB; ++cb) acc[m * CB + cb] += dot(d[m], xv[cb]);
    }
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

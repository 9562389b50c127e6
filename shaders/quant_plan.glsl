// The walk every quant kernel does over its tensor; include after declaring the push block
// `p` (which starts with PLAN_FIELDS). Invocation g of channel c (g < partials);
// workgroup w = g / L of the channel (L = workgroup size) owns the contiguous units
// [w * L * chunk, (w + 1) * L * chunk) of the channel and its invocation l handles units
// w * L * chunk + l + k * L, k < chunk: at every step a workgroup touches L consecutive
// units (coalesced on GPUs, streaming on CPU drivers). Unit j of a channel is
// (outer index a, inner unit b) = (j / inner, j % inner), stored at
// u = (a * channels + c) * inner + b; the walk steps b and u without divisions.
// The push constants the loop needs are copied into the Walk first: a CPU driver may not
// hoist their loads past the loop's buffer stores. MULTI_ROW (specialization constant 3,
// set by dispatch_plan) is 0 when outer == 1 (per tensor, per row of weights): then a
// channel is one contiguous row, u = c * inner + j, and the row bookkeeping compiles away.
layout(constant_id = 3) const uint MULTI_ROW = 1;
struct Walk {
  uint c;           // channel
  uint left;        // units this invocation may still take
  uint j, b, u;     // unit index within the channel, j % inner, buffer index
  uint end;         // units per channel
  uint inner;       // units per (outer, channel) row
  uint step_inner;  // L % inner
  uint step_u;      // u advance without a row wrap
  uint skip;        // extra u advance per row wrap: the other channels' rows
};

// Dispatched as (partials / L, channels) workgroups: channel = workgroup y, no divisions
// unless the channel has several outer rows (per-channel activations, MULTI_ROW).
void walk_begin(out Walk w) {
  w.c = gl_WorkGroupID.y;
  w.inner = p.inner;
  w.end = p.outer * p.inner;
  w.step_inner = p.step_inner;
  w.skip = (p.channels - 1u) * p.inner;
  w.step_u = gl_WorkGroupSize.x + p.step_outer * w.skip;
  uint g = gl_GlobalInvocationID.x;
  uint l = gl_LocalInvocationID.x;
  w.j = (g - l) * p.chunk + l;
  w.left = p.chunk;
  uint a = MULTI_ROW == 0u ? 0u : w.j / p.inner;  // j < inner whenever outer == 1 and j is valid
  w.b = w.j - a * p.inner;
  w.u = (a * p.channels + w.c) * p.inner + w.b;
}

bool walk_valid(Walk w) { return w.left != 0u && w.j < w.end; }

uint walk_unit(Walk w) { return w.u; }

void walk_next(inout Walk w) {
  w.left -= 1u;
  w.j += gl_WorkGroupSize.x;
  if (MULTI_ROW == 0u) {
    w.u += gl_WorkGroupSize.x;
    return;
  }
  w.u += w.step_u;
  w.b += w.step_inner;
  if (w.b >= w.inner) {
    w.b -= w.inner;
    w.u += w.skip;
  }
}

// Index of this invocation's partial: [channel][g].
uint walk_partial_index() { return gl_WorkGroupID.y * p.partials + gl_GlobalInvocationID.x; }

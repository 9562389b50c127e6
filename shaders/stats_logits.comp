#version 450
// Per row of logits [rows, classes]: the max logit and the max softmax probability
// (1 / sum exp(l - max)), what the last-layer panel averages over the batch.
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;

layout(std430, binding = 0) readonly buffer Lb { float logits[]; };
layout(std430, binding = 1) writeonly buffer Ob { vec2 row_stats[]; };

layout(push_constant) uniform Params {
  uint rows;
  uint classes;
} p;

void main() {
  uint r = gl_GlobalInvocationID.x;
  if (r >= p.rows) return;
  uint base = r * p.classes;
  float m = logits[base];
  for (uint c = 1u; c < p.classes; ++c) m = max(m, logits[base + c]);
  float s = 0.0;
  for (uint c = 0u; c < p.classes; ++c) s += exp(logits[base + c] - m);
  row_stats[r] = vec2(m, 1.0 / s);
}

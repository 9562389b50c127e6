#version 450
// Logits of the integer path: y[n, o] = float(sum_c (2 code[o, c] - nw) x[n, c]) * scale + bias[o].
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
layout(constant_id = 3) const int BITS = 8;  // container bits of a code
layout(std430, binding = 0) readonly buffer Xb { int x[]; };
layout(std430, binding = 1) readonly buffer Wb { uint wcode[]; };
layout(std430, binding = 2) readonly buffer Bb { float bias[]; };
layout(std430, binding = 3) writeonly buffer Yb { float y[]; };
layout(push_constant) uniform Params { int n, c_in, classes, words, wlevels; float scale; } p;

const int PER_WORD = 32 / BITS;
const uint MASK = (1u << BITS) - 1u;

void main() {
  const int i = int(gl_GlobalInvocationID.x);
  if (i >= p.n * p.classes) return;
  const int b = i / p.classes, o = i % p.classes;
  int acc = 0;
  for (int c = 0; c < p.c_in; ++c) {
    const uint word = wcode[o * p.words + c / PER_WORD];
    acc += (2 * int((word >> ((c % PER_WORD) * BITS)) & MASK) - p.wlevels) * x[b * p.c_in + c];
  }
  precise float logit = float(acc) * p.scale;
  precise float out_v = logit + bias[o];
  y[i] = out_v;
}

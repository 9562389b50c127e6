// Softmax cross-entropy over a batch in ONE workgroup: invocation t handles rows t, t+LS, ...
// (max-subtracted, so exp never overflows), then a tree reduction gives the batch loss sum
// and the number of rows whose argmax (first maximum) equals the label. A label outside
// [0, classes) yields a NaN loss and no one-hot term in the gradient, except the label
// 0xffffffff ("ignore": padding rows of a partial eval batch), which adds no loss, is never
// counted correct and gets a zero gradient.
// Include after defining WITH_GRAD (0 or 1) and, when 1, binding 4 `dlogits`.
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;

layout(std430, binding = 0) readonly buffer Zb { float logits[]; };
layout(std430, binding = 1) readonly buffer Lb { uint labels[]; };
layout(std430, binding = 2) buffer LOSSb { float loss[]; };    // read when accumulating
layout(std430, binding = 3) buffer CORb { uint correct[]; };   // read when accumulating

layout(push_constant) uniform Params {
  uint rows, classes;
  float grad_scale;  // scale / rows
  uint accumulate;   // 0: loss = mean, correct = count; 1: loss += sum, correct += count
} p;

shared float red_loss[gl_WorkGroupSize.x];
shared uint red_correct[gl_WorkGroupSize.x];

void main() {
  uint lid = gl_LocalInvocationID.x;
  float loss_sum = 0.0;
  uint n_correct = 0u;
  for (uint r = lid; r < p.rows; r += gl_WorkGroupSize.x) {
    uint base = r * p.classes;
    float m = logits[base];
    uint best = 0u;
    for (uint j = 1u; j < p.classes; ++j) {
      float v = logits[base + j];
      if (v > m) { m = v; best = j; }
    }
    float s = 0.0;
    for (uint j = 0u; j < p.classes; ++j) s += exp(logits[base + j] - m);
    uint label = labels[r];
    bool valid = label < p.classes;
    bool ignored = label == 0xffffffffu;
    loss_sum += ignored ? 0.0 : valid ? log(s) + m - logits[base + label] : uintBitsToFloat(0x7fc00000u);
    n_correct += (valid && best == label) ? 1u : 0u;
#if WITH_GRAD
    float inv_s = 1.0 / s;
    for (uint j = 0u; j < p.classes; ++j) {
      float onehot = j == label ? 1.0 : 0.0;
      dlogits[base + j] = ignored ? 0.0 : (exp(logits[base + j] - m) * inv_s - onehot) * p.grad_scale;
    }
#endif
  }

  red_loss[lid] = loss_sum;
  red_correct[lid] = n_correct;
  barrier();
  for (uint s = gl_WorkGroupSize.x / 2u; s > 0u; s >>= 1u) {
    if (lid < s) {
      red_loss[lid] += red_loss[lid + s];
      red_correct[lid] += red_correct[lid + s];
    }
    barrier();
  }
  if (lid == 0u) {
    if (p.accumulate != 0u) {
      loss[0] += red_loss[0];
      correct[0] += red_correct[0];
    } else {
      loss[0] = red_loss[0] / float(p.rows);
      correct[0] = red_correct[0];
    }
  }
}

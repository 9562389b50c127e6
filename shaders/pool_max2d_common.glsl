// General max pool (k x k, stride, pad; PyTorch's nn.MaxPool2d in floor mode), float elements.
// Define POOL_BACKWARD (0 or 1) before including.
//   forward:  one invocation per output element, walking its window clipped to the image
//             (padding is -inf and never wins: pad <= k / 2 leaves every window an element).
//   backward: one invocation per dx element, gathering dy over the windows that cover it
//             (in row-major window order) whose argmax, recomputed from x, is this element.
//             No atomics: the sum order is fixed, so the result is deterministic.
// Ties: the first maximum in row-major window order wins; a NaN always wins (PyTorch's CPU
// rule, as pool_common.glsl).
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;

// Must match MaxPool2dPush in src/nn/ops/pool.cpp.
layout(push_constant) uniform Params { int planes, h, w, ho, wo, k, stride, pad, accumulate; } p;

layout(std430, binding = 0) readonly buffer Xb { float x[]; };

// Flat index (within the plane) of the maximum of window (oh, ow) of the plane at `base`.
int window_argmax(int base, int oh, int ow) {
  const int h0 = oh * p.stride - p.pad, w0 = ow * p.stride - p.pad;
  const int hs = max(h0, 0), he = min(h0 + p.k, p.h), ws = max(w0, 0), we = min(w0 + p.k, p.w);
  int best = hs * p.w + ws;
  float m = x[base + best];
  for (int ih = hs; ih < he; ++ih)
    for (int iw = ws; iw < we; ++iw) {
      const float v = x[base + ih * p.w + iw];
      if (v > m || isnan(v)) {
        m = v;
        best = ih * p.w + iw;
      }
    }
  return best;
}

#if POOL_BACKWARD == 0
layout(std430, binding = 1) writeonly buffer Yb { float y[]; };

void main() {
  const int i = int(gl_GlobalInvocationID.x);
  if (i >= p.planes * p.ho * p.wo) return;
  const int ow = i % p.wo, oh = (i / p.wo) % p.ho, plane = i / (p.wo * p.ho);
  const int base = plane * p.h * p.w;
  y[i] = x[base + window_argmax(base, oh, ow)];
}

#else
layout(std430, binding = 1) readonly buffer DYb { float dy[]; };
layout(std430, binding = 2) buffer DXb { float dx[]; };  // read when accumulating

void main() {
  const int i = int(gl_GlobalInvocationID.x);
  if (i >= p.planes * p.h * p.w) return;
  const int iw = i % p.w, ih = (i / p.w) % p.h, plane = i / (p.w * p.h);
  const int base = plane * p.h * p.w, self = ih * p.w + iw;
  // Windows oh with oh * stride - pad <= ih < oh * stride - pad + k (likewise ow).
  const int oh_lo = max(0, (ih + p.pad - p.k + p.stride) / p.stride), oh_hi = min(p.ho - 1, (ih + p.pad) / p.stride);
  const int ow_lo = max(0, (iw + p.pad - p.k + p.stride) / p.stride), ow_hi = min(p.wo - 1, (iw + p.pad) / p.stride);
  float g = 0.0;
  for (int oh = oh_lo; oh <= oh_hi; ++oh)
    for (int ow = ow_lo; ow <= ow_hi; ++ow)
      if (window_argmax(base, oh, ow) == self) g += dy[(plane * p.ho + oh) * p.wo + ow];
  dx[i] = p.accumulate != 0 ? dx[i] + g : g;
}
#endif

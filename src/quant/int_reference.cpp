#include "quant/int_reference.h"

#include <algorithm>

#include "backend/error.h"

namespace vkqat::quant::ref {

int32_t int_requant(int64_t v, int shift, int levels) {
  v += int64_t(1) << (shift - 1);
  if (v < 0) return 0;
  return int32_t(std::min<int64_t>(v >> shift, levels));
}

std::vector<int32_t> int_conv(const IntConv& c, IntConvMode mode, const std::vector<int32_t>& x, int n, int h, int w,
                              const std::vector<int32_t>* residual) {
  const int oh = (h + 2 * c.pad - c.k) / c.stride + 1, ow = (w + 2 * c.pad - c.k) / c.stride + 1, kk = c.k * c.k;
  if (x.size() != size_t(n) * c.c_in * h * w) throw Error("ref::int_conv " + c.name + ": input size mismatch");
  if (c.groups < 1 || c.c_in % c.groups || c.c_out % c.groups) throw Error("ref::int_conv " + c.name + ": bad groups");
  const int gi = c.group_in(), go = c.c_out / c.groups;
  const std::vector<int> codes = unpack_codes(c.codes, c.c_out, kk, gi, c.wbits);
  const int nw = c.wlevels();
  std::vector<int32_t> y(size_t(n) * c.c_out * oh * ow);
  if (mode == IntConvMode::Residual && (!residual || residual->size() != y.size()))
    throw Error("ref::int_conv " + c.name + ": residual size mismatch");
  for (int b = 0; b < n; ++b)
    for (int o = 0; o < c.c_out; ++o)
      for (int r = 0; r < oh; ++r)
        for (int q = 0; q < ow; ++q) {
          int64_t acc = 0, border = 0;
          for (int cg = 0; cg < gi; ++cg)
            for (int kh = 0; kh < c.k; ++kh)
              for (int kw = 0; kw < c.k; ++kw) {
                const int iy = r * c.stride - c.pad + kh, ix = q * c.stride - c.pad + kw;
                if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
                const int ci = (o / go) * gi + cg;
                const int wq = 2 * codes[(size_t(o) * kk + kh * c.k + kw) * gi + cg] - nw;
                acc += int64_t(wq) * x[((size_t(b) * c.c_in + ci) * h + iy) * w + ix];
                border += wq;
              }
          const size_t idx = ((size_t(b) * c.c_out + o) * oh + r) * ow + q;
          acc -= int64_t(c.x_offset) * border;  // offset codes a - z (padding is 0, not -z)
          if (mode == IntConvMode::Raw) {
            y[idx] = int32_t(acc);
            continue;
          }
          int64_t v = acc * c.rq.mult[o] + c.rq.bias[o];
          if (mode == IntConvMode::Stem) v += border * c.rq.mult2[o];
          if (mode == IntConvMode::Residual) v += int64_t((*residual)[idx]) * c.rq.mult2[o];
          y[idx] = int_requant(v, c.rq.shift[o], c.levels);
        }
  return y;
}

std::vector<int32_t> int_maxpool(const std::vector<int32_t>& x, int n, int c, int h, int w, int kernel, int stride,
                                 int pad) {
  if (x.size() != size_t(n) * c * h * w) throw Error("ref::int_maxpool: input size mismatch");
  const int oh = (h + 2 * pad - kernel) / stride + 1, ow = (w + 2 * pad - kernel) / stride + 1;
  std::vector<int32_t> y(size_t(n) * c * oh * ow);
  for (int p = 0; p < n * c; ++p)
    for (int r = 0; r < oh; ++r)
      for (int q = 0; q < ow; ++q) {
        int32_t best = 0;  // codes are >= 0 and every window holds at least one pixel
        for (int kh = 0; kh < kernel; ++kh)
          for (int kw = 0; kw < kernel; ++kw) {
            const int iy = r * stride - pad + kh, ix = q * stride - pad + kw;
            if (iy >= 0 && iy < h && ix >= 0 && ix < w) best = std::max(best, x[(size_t(p) * h + iy) * w + ix]);
          }
        y[(size_t(p) * oh + r) * ow + q] = best;
      }
  return y;
}

std::vector<int32_t> int_pool(const std::vector<int32_t>& x, int n, int c, int hw, int32_t mult, int shift, int levels) {
  std::vector<int32_t> y(size_t(n) * c);
  for (size_t i = 0; i < y.size(); ++i) {
    int64_t sum = 0;
    for (int k = 0; k < hw; ++k) sum += x[i * hw + k];
    y[i] = int_requant(sum * mult, shift, levels);
  }
  return y;
}

std::vector<float> int_fc(const std::vector<uint32_t>& packed, int wbits, int c_in, int classes, float logit_scale,
                          const std::vector<float>& bias, const std::vector<int32_t>& x, int n) {
  const std::vector<int> codes = unpack_codes(packed, classes, 1, c_in, wbits);
  const int nw = (1 << wbits) - 1;
  std::vector<float> logits(size_t(n) * classes);
  for (int b = 0; b < n; ++b)
    for (int o = 0; o < classes; ++o) {
      int32_t acc = 0;
      for (int ci = 0; ci < c_in; ++ci) acc += (2 * codes[size_t(o) * c_in + ci] - nw) * x[size_t(b) * c_in + ci];
      logits[size_t(b) * classes + o] = float(acc) * logit_scale + bias[o];
    }
  return logits;
}

IntTrace int_forward(const IntModel& m, const std::vector<uint8_t>& pixels, int n) {
  const nn::ModelConfig& mc = m.model;
  if (pixels.size() != size_t(n) * mc.in_channels * mc.height * mc.width_px)
    throw Error("ref::int_forward: pixel count does not match the model's input shape");
  const std::vector<int32_t> image(pixels.begin(), pixels.end());
  IntTrace t;
  std::vector<std::vector<int32_t>> out(m.nodes.size());
  for (size_t i = 0; i < m.nodes.size(); ++i) {
    const IntNode& nd = m.nodes[i];
    const int j = nd.input_index.at(0);
    const std::vector<int32_t>& x = j < 0 ? image : out[size_t(j)];
    const int c = j < 0 ? mc.in_channels : m.nodes[size_t(j)].c;
    const int h = j < 0 ? mc.height : m.nodes[size_t(j)].h, w = j < 0 ? mc.width_px : m.nodes[size_t(j)].w;
    switch (nd.op) {
      case IntOp::Conv:
        out[i] = int_conv(nd.conv, nd.mode, x, n, h, w,
                          nd.mode == IntConvMode::Residual ? &out[size_t(nd.input_index.at(1))] : nullptr);
        break;
      case IntOp::MaxPool:
        out[i] = int_maxpool(x, n, c, h, w, nd.kernel, nd.stride, nd.pad);
        break;
      case IntOp::AvgPool:
        out[i] = int_pool(x, n, c, h * w, nd.mult, nd.shift, nd.levels);
        break;
      case IntOp::Fc:
        t.logits = int_fc(nd.conv.codes, nd.conv.wbits, nd.conv.c_in, nd.conv.c_out, nd.logit_scale, nd.bias, x, n);
        continue;
    }
    t.layers.push_back({nd.name, out[i]});
  }
  return t;
}

}  // namespace vkqat::quant::ref

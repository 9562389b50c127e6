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
  const std::vector<int> codes = unpack_codes(c.codes, c.c_out, kk, c.c_in, c.wbits);
  const int nw = c.wlevels();
  std::vector<int32_t> y(size_t(n) * c.c_out * oh * ow);
  if (mode == IntConvMode::Residual && (!residual || residual->size() != y.size()))
    throw Error("ref::int_conv " + c.name + ": residual size mismatch");
  for (int b = 0; b < n; ++b)
    for (int o = 0; o < c.c_out; ++o)
      for (int r = 0; r < oh; ++r)
        for (int q = 0; q < ow; ++q) {
          int64_t acc = 0, border = 0;
          for (int ci = 0; ci < c.c_in; ++ci)
            for (int kh = 0; kh < c.k; ++kh)
              for (int kw = 0; kw < c.k; ++kw) {
                const int iy = r * c.stride - c.pad + kh, ix = q * c.stride - c.pad + kw;
                if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
                const int wq = 2 * codes[(size_t(o) * kk + kh * c.k + kw) * c.c_in + ci] - nw;
                acc += int64_t(wq) * x[((size_t(b) * c.c_in + ci) * h + iy) * w + ix];
                border += wq;
              }
          const size_t idx = ((size_t(b) * c.c_out + o) * oh + r) * ow + q;
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
  IntTrace t;
  std::vector<int32_t> x(pixels.begin(), pixels.end());
  int h = mc.height, w = mc.width_px;
  x = int_conv(m.stem, IntConvMode::Stem, x, n, h, w);
  t.layers.push_back({m.stem.name, x});
  for (const IntBlock& b : m.blocks) {
    const int s = b.c1.stride, oh = (h - 1) / s + 1, ow = (w - 1) / s + 1;
    std::vector<int32_t> shortcut = x;
    if (b.down) {
      shortcut = int_conv(*b.down, IntConvMode::Raw, x, n, h, w);
      t.layers.push_back({b.down->name, shortcut});
    }
    std::vector<int32_t> y1 = int_conv(b.c1, IntConvMode::Requant, x, n, h, w);
    t.layers.push_back({b.c1.name, y1});
    x = int_conv(b.c2, IntConvMode::Residual, y1, n, oh, ow, &shortcut);
    t.layers.push_back({b.c2.name, x});
    h = oh, w = ow;
  }
  std::vector<int32_t> pooled = int_pool(x, n, m.fc_in(), h * w, m.pool_mult, m.pool_shift, m.fc_levels);
  t.layers.push_back({"fc.act", pooled});
  t.logits = int_fc(m.fc_codes, m.fc_wbits, m.fc_in(), mc.classes, m.fc_logit_scale, m.fc_bias, pooled, n);
  return t;
}

}  // namespace vkqat::quant::ref

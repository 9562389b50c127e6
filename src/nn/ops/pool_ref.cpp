// CPU twin of pool: plain loops, sums in double.
#include <algorithm>
#include <cmath>

#include "nn/ops/pool.h"

namespace vkqat::nn::ref {

template <class T>
std::vector<T> global_avg_pool_forward(const std::vector<T>& x, const std::vector<int>& shape) {
  size_t planes = size_t(shape.at(0)) * shape.at(1), hw = size_t(shape.at(2)) * shape.at(3);
  std::vector<T> y(planes);
  for (size_t p = 0; p < planes; ++p) {
    double s = 0;
    for (size_t i = 0; i < hw; ++i) s += double(x[p * hw + i]);
    y[p] = T(s / double(hw));
  }
  return y;
}

template <class T>
std::vector<T> global_avg_pool_backward(const std::vector<T>& dy, const std::vector<int>& shape) {
  size_t planes = size_t(shape.at(0)) * shape.at(1), hw = size_t(shape.at(2)) * shape.at(3);
  std::vector<T> dx(planes * hw);
  for (size_t p = 0; p < planes; ++p)
    for (size_t i = 0; i < hw; ++i) dx[p * hw + i] = T(double(dy[p]) / double(hw));
  return dx;
}

namespace {
// Flat index into x of the maximum of window (oh, ow) in plane p: first maximum wins, NaN wins.
template <class T>
size_t window_argmax(const std::vector<T>& x, size_t p, size_t oh, size_t ow, size_t h, size_t w) {
  size_t best = (p * h + 2 * oh) * w + 2 * ow;
  for (size_t dh = 0; dh < 2; ++dh)
    for (size_t dw = 0; dw < 2; ++dw) {
      size_t a = (p * h + 2 * oh + dh) * w + 2 * ow + dw;
      if (x[a] > x[best] || std::isnan(x[a])) best = a;  // PyTorch's rule
    }
  return best;
}
}  // namespace

template <class T>
std::vector<T> maxpool2x2_forward(const std::vector<T>& x, const std::vector<int>& shape) {
  size_t planes = size_t(shape.at(0)) * shape.at(1), h = shape.at(2), w = shape.at(3);
  size_t ho = h / 2, wo = w / 2;
  std::vector<T> y(planes * ho * wo);
  for (size_t p = 0; p < planes; ++p)
    for (size_t oh = 0; oh < ho; ++oh)
      for (size_t ow = 0; ow < wo; ++ow) y[(p * ho + oh) * wo + ow] = x[window_argmax(x, p, oh, ow, h, w)];
  return y;
}

template <class T>
std::vector<T> maxpool2x2_backward(const std::vector<T>& x, const std::vector<T>& dy,
                                   const std::vector<int>& shape) {
  size_t planes = size_t(shape.at(0)) * shape.at(1), h = shape.at(2), w = shape.at(3);
  size_t ho = h / 2, wo = w / 2;
  std::vector<T> dx(x.size(), T(0));
  for (size_t p = 0; p < planes; ++p)
    for (size_t oh = 0; oh < ho; ++oh)
      for (size_t ow = 0; ow < wo; ++ow) dx[window_argmax(x, p, oh, ow, h, w)] += dy[(p * ho + oh) * wo + ow];
  return dx;
}

// General max pool: forward takes each window's argmax, backward scatters dy there, walking the
// windows in row-major order (the order in which the shader's gather adds them up).
namespace {
template <class T>
size_t window_argmax_k(const Pool2dShape& s, const std::vector<T>& x, size_t plane, int oh, int ow) {
  const int h0 = oh * s.stride - s.pad, w0 = ow * s.stride - s.pad;
  const size_t base = plane * size_t(s.h) * s.w;
  size_t best = 0;
  bool first = true;
  T m = T(0);
  for (int ih = std::max(h0, 0); ih < std::min(h0 + s.k, s.h); ++ih)
    for (int iw = std::max(w0, 0); iw < std::min(w0 + s.k, s.w); ++iw) {
      const size_t i = base + size_t(ih) * s.w + iw;
      if (first || x[i] > m || std::isnan(x[i])) {
        m = x[i];
        best = i;
        first = false;
      }
    }
  return best;
}
}  // namespace

template <class T>
std::vector<T> maxpool2d_forward(const Pool2dShape& s, const std::vector<T>& x) {
  s.validate();
  const size_t planes = size_t(s.n) * s.c;
  std::vector<T> y(planes * s.out_h() * s.out_w());
  size_t o = 0;
  for (size_t p = 0; p < planes; ++p)
    for (int oh = 0; oh < s.out_h(); ++oh)
      for (int ow = 0; ow < s.out_w(); ++ow) y[o++] = x[window_argmax_k(s, x, p, oh, ow)];
  return y;
}

template <class T>
std::vector<T> maxpool2d_backward(const Pool2dShape& s, const std::vector<T>& x, const std::vector<T>& dy) {
  s.validate();
  const size_t planes = size_t(s.n) * s.c;
  std::vector<T> dx(x.size(), T(0));
  size_t o = 0;
  for (size_t p = 0; p < planes; ++p)
    for (int oh = 0; oh < s.out_h(); ++oh)
      for (int ow = 0; ow < s.out_w(); ++ow) dx[window_argmax_k(s, x, p, oh, ow)] += dy[o++];
  return dx;
}

#define VKQAT_POOL_REF(T)                                                                          \
  template std::vector<T> global_avg_pool_forward(const std::vector<T>&, const std::vector<int>&);  \
  template std::vector<T> global_avg_pool_backward(const std::vector<T>&, const std::vector<int>&); \
  template std::vector<T> maxpool2x2_forward(const std::vector<T>&, const std::vector<int>&);       \
  template std::vector<T> maxpool2x2_backward(const std::vector<T>&, const std::vector<T>&,         \
                                              const std::vector<int>&);                              \
  template std::vector<T> maxpool2d_forward(const Pool2dShape&, const std::vector<T>&);               \
  template std::vector<T> maxpool2d_backward(const Pool2dShape&, const std::vector<T>&, const std::vector<T>&);
VKQAT_POOL_REF(float)
VKQAT_POOL_REF(double)
#undef VKQAT_POOL_REF

}  // namespace vkqat::nn::ref

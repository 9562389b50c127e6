// CPU twin of pool: plain loops, sums in double.
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

#define VKQAT_POOL_REF(T)                                                                          \
  template std::vector<T> global_avg_pool_forward(const std::vector<T>&, const std::vector<int>&);  \
  template std::vector<T> global_avg_pool_backward(const std::vector<T>&, const std::vector<int>&); \
  template std::vector<T> maxpool2x2_forward(const std::vector<T>&, const std::vector<int>&);       \
  template std::vector<T> maxpool2x2_backward(const std::vector<T>&, const std::vector<T>&,         \
                                              const std::vector<int>&);
VKQAT_POOL_REF(float)
VKQAT_POOL_REF(double)
#undef VKQAT_POOL_REF

}  // namespace vkqat::nn::ref

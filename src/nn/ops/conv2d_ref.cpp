// CPU twin of the conv2d kernels: obviously-correct loops, accumulating in double.
#include "backend/error.h"
#include "nn/ops/conv2d.h"

namespace vkqat::nn::ref {

namespace {

// Calls f(x index, w index, y index) for every multiply-add of the forward pass whose
// input position lies inside the (unpadded) image.
template <class F>
void for_each_tap(const Conv2dShape& s, F f) {
  s.validate();
  const int oh_n = s.out_h(), ow_n = s.out_w();
  const int cin_g = s.c_in / s.groups, cout_g = s.c_out / s.groups;
  for (int n = 0; n < s.n; ++n)
    for (int o = 0; o < s.c_out; ++o) {
      const int g = o / cout_g;
      for (int ci = 0; ci < cin_g; ++ci) {
        const int c = g * cin_g + ci;
        for (int oh = 0; oh < oh_n; ++oh)
          for (int ow = 0; ow < ow_n; ++ow)
            for (int kh = 0; kh < s.kh; ++kh) {
              const int ih = oh * s.stride - s.pad + kh;
              if (ih < 0 || ih >= s.h) continue;
              for (int kw = 0; kw < s.kw; ++kw) {
                const int iw = ow * s.stride - s.pad + kw;
                if (iw < 0 || iw >= s.w) continue;
                size_t xi = ((size_t(n) * s.c_in + c) * s.h + ih) * s.w + iw;
                size_t wi = ((size_t(o) * cin_g + ci) * s.kh + kh) * s.kw + kw;
                size_t yi = ((size_t(n) * s.c_out + o) * oh_n + oh) * ow_n + ow;
                f(xi, wi, yi);
              }
            }
      }
    }
}

void check_size(const char* what, const std::vector<float>& v, const std::vector<int>& shape) {
  size_t want = 1;
  for (int d : shape) want *= size_t(d);
  if (v.size() != want)
    throw Error(std::string("ref::conv2d: ") + what + " has " + std::to_string(v.size()) +
                " values, shape " + shape_str(shape) + " needs " + std::to_string(want));
}

std::vector<float> to_float(const std::vector<double>& v) { return std::vector<float>(v.begin(), v.end()); }

}  // namespace

std::vector<float> conv2d_forward(const Conv2dShape& s, const std::vector<float>& x,
                                  const std::vector<float>& w) {
  check_size("x", x, s.x_shape());
  check_size("w", w, s.w_shape());
  std::vector<double> y(size_t(s.n) * s.c_out * s.out_h() * s.out_w(), 0.0);
  for_each_tap(s, [&](size_t xi, size_t wi, size_t yi) { y[yi] += double(x[xi]) * w[wi]; });
  return to_float(y);
}

std::vector<float> conv2d_backward_data(const Conv2dShape& s, const std::vector<float>& dy,
                                        const std::vector<float>& w) {
  check_size("dy", dy, s.y_shape());
  check_size("w", w, s.w_shape());
  std::vector<double> dx(size_t(s.n) * s.c_in * s.h * s.w, 0.0);
  for_each_tap(s, [&](size_t xi, size_t wi, size_t yi) { dx[xi] += double(dy[yi]) * w[wi]; });
  return to_float(dx);
}

std::vector<float> conv2d_backward_weight(const Conv2dShape& s, const std::vector<float>& x,
                                          const std::vector<float>& dy) {
  check_size("x", x, s.x_shape());
  check_size("dy", dy, s.y_shape());
  std::vector<double> dw(size_t(s.c_out) * (s.c_in / s.groups) * s.kh * s.kw, 0.0);
  for_each_tap(s, [&](size_t xi, size_t wi, size_t yi) { dw[wi] += double(dy[yi]) * x[xi]; });
  return to_float(dw);
}

}  // namespace vkqat::nn::ref

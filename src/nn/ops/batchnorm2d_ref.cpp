// CPU twin of batchnorm2d: plain loops, sums in double.
#include <cmath>

#include "nn/ops/batchnorm2d.h"

namespace vkqat::nn::ref {

namespace {
struct Dims {
  size_t n, c, hw;
  explicit Dims(const std::vector<int>& s) : n(s.at(0)), c(s.at(1)), hw(size_t(s.at(2)) * s.at(3)) {}
  size_t at(size_t ni, size_t ci, size_t i) const { return (ni * c + ci) * hw + i; }
};
}  // namespace

template <class T>
std::vector<T> batchnorm2d_forward_train(const std::vector<T>& x, const std::vector<int>& shape,
                                         const std::vector<T>& gamma, const std::vector<T>& beta,
                                         std::vector<T>& running_mean, std::vector<T>& running_var,
                                         std::vector<T>& saved_mean, std::vector<T>& saved_invstd,
                                         double eps, double momentum, bool relu,
                                         const std::vector<T>* residual) {
  Dims d(shape);
  double count = double(d.n * d.hw);
  std::vector<T> y(x.size());
  saved_mean.assign(d.c, T(0));
  saved_invstd.assign(d.c, T(0));
  for (size_t c = 0; c < d.c; ++c) {
    double sum = 0;
    for (size_t n = 0; n < d.n; ++n)
      for (size_t i = 0; i < d.hw; ++i) sum += double(x[d.at(n, c, i)]);
    double mean = sum / count, sq = 0;
    for (size_t n = 0; n < d.n; ++n)
      for (size_t i = 0; i < d.hw; ++i) sq += (double(x[d.at(n, c, i)]) - mean) * (double(x[d.at(n, c, i)]) - mean);
    double var = sq / count, inv_std = 1.0 / std::sqrt(var + eps);
    saved_mean[c] = T(mean);
    saved_invstd[c] = T(inv_std);
    running_mean[c] = T((1 - momentum) * double(running_mean[c]) + momentum * mean);
    running_var[c] = T((1 - momentum) * double(running_var[c]) + momentum * sq / (count - 1));
    for (size_t n = 0; n < d.n; ++n)
      for (size_t i = 0; i < d.hw; ++i) {
        size_t a = d.at(n, c, i);
        double v = (double(x[a]) - mean) * inv_std * double(gamma[c]) + double(beta[c]);
        if (residual) v += double((*residual)[a]);
        y[a] = T(relu && v < 0 ? 0.0 : v);
      }
  }
  return y;
}

template <class T>
std::vector<T> batchnorm2d_forward_eval(const std::vector<T>& x, const std::vector<int>& shape,
                                        const std::vector<T>& gamma, const std::vector<T>& beta,
                                        const std::vector<T>& running_mean,
                                        const std::vector<T>& running_var, double eps, bool relu) {
  Dims d(shape);
  std::vector<T> y(x.size());
  for (size_t n = 0; n < d.n; ++n)
    for (size_t c = 0; c < d.c; ++c)
      for (size_t i = 0; i < d.hw; ++i) {
        size_t a = d.at(n, c, i);
        double v = (double(x[a]) - double(running_mean[c])) / std::sqrt(double(running_var[c]) + eps) *
                       double(gamma[c]) + double(beta[c]);
        y[a] = T(relu && v < 0 ? 0.0 : v);
      }
  return y;
}

template <class T>
void batchnorm2d_backward(const std::vector<T>& x, const std::vector<T>& y, const std::vector<T>& dy,
                          const std::vector<int>& shape, const std::vector<T>& gamma,
                          const std::vector<T>& saved_mean, const std::vector<T>& saved_invstd,
                          bool relu, std::vector<T>& dx, std::vector<T>& dgamma,
                          std::vector<T>& dbeta) {
  Dims d(shape);
  double count = double(d.n * d.hw);
  dx.assign(x.size(), T(0));
  dgamma.assign(d.c, T(0));
  dbeta.assign(d.c, T(0));
  auto grad = [&](size_t a) { return relu && !(y[a] > 0) ? 0.0 : double(dy[a]); };
  for (size_t c = 0; c < d.c; ++c) {
    double mean = double(saved_mean[c]), inv_std = double(saved_invstd[c]);
    double sum_g = 0, sum_gxhat = 0;
    for (size_t n = 0; n < d.n; ++n)
      for (size_t i = 0; i < d.hw; ++i) {
        size_t a = d.at(n, c, i);
        sum_g += grad(a);
        sum_gxhat += grad(a) * (double(x[a]) - mean) * inv_std;
      }
    dgamma[c] = T(sum_gxhat);
    dbeta[c] = T(sum_g);
    for (size_t n = 0; n < d.n; ++n)
      for (size_t i = 0; i < d.hw; ++i) {
        size_t a = d.at(n, c, i);
        double xhat = (double(x[a]) - mean) * inv_std;
        dx[a] = T(double(gamma[c]) * inv_std * (grad(a) - sum_g / count - xhat * sum_gxhat / count));
      }
  }
}

#define VKQAT_BN_REF(T)                                                                          \
  template std::vector<T> batchnorm2d_forward_train(                                             \
      const std::vector<T>&, const std::vector<int>&, const std::vector<T>&, const std::vector<T>&, \
      std::vector<T>&, std::vector<T>&, std::vector<T>&, std::vector<T>&, double, double, bool,   \
      const std::vector<T>*);                                                                     \
  template std::vector<T> batchnorm2d_forward_eval(const std::vector<T>&, const std::vector<int>&,  \
                                                   const std::vector<T>&, const std::vector<T>&,   \
                                                   const std::vector<T>&, const std::vector<T>&,   \
                                                   double, bool);                                  \
  template void batchnorm2d_backward(const std::vector<T>&, const std::vector<T>&,                 \
                                     const std::vector<T>&, const std::vector<int>&,               \
                                     const std::vector<T>&, const std::vector<T>&,                 \
                                     const std::vector<T>&, bool, std::vector<T>&,                 \
                                     std::vector<T>&, std::vector<T>&);
VKQAT_BN_REF(float)
VKQAT_BN_REF(double)
#undef VKQAT_BN_REF

}  // namespace vkqat::nn::ref

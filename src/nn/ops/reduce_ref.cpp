// CPU twins of the reductions in reduce.h: plain loops in double.
#include <algorithm>
#include <cmath>

#include "nn/ops/reduce.h"

namespace vkqat::nn::ref {
namespace {

// Calls f(channel, value) for every element of x.
template <class F>
void for_each_with_channel(const std::vector<float>& x, const std::vector<int>& shape, ReduceScope scope, F f) {
  const size_t channels = size_t(reduce_channel_count(shape, scope));
  size_t outer = scope == ReduceScope::Channels ? size_t(shape[0]) : 1;
  size_t inner = x.size() / channels / outer;
  for (size_t a = 0; a < outer; ++a)
    for (size_t c = 0; c < channels; ++c)
      for (size_t b = 0; b < inner; ++b) f(c, double(x[(a * channels + c) * inner + b]));
}

size_t channel_count(const std::vector<int>& shape, ReduceScope scope) {
  return size_t(reduce_channel_count(shape, scope));
}

}  // namespace

std::vector<double> reduce_sum(const std::vector<float>& x, const std::vector<int>& shape, ReduceScope scope) {
  std::vector<double> sum(channel_count(shape, scope), 0.0);
  for_each_with_channel(x, shape, scope, [&](size_t c, double v) { sum[c] += v; });
  return sum;
}

std::vector<double> reduce_mean(const std::vector<float>& x, const std::vector<int>& shape, ReduceScope scope) {
  std::vector<double> mean = reduce_sum(x, shape, scope);
  const double per_channel = double(x.size()) / double(mean.size());
  for (double& m : mean) m /= per_channel;
  return mean;
}

std::vector<double> reduce_var(const std::vector<float>& x, const std::vector<int>& shape, ReduceScope scope,
                               bool unbiased) {
  const std::vector<double> mean = reduce_mean(x, shape, scope);
  std::vector<double> var(mean.size(), 0.0);
  for_each_with_channel(x, shape, scope, [&](size_t c, double v) { var[c] += (v - mean[c]) * (v - mean[c]); });
  const double per_channel = double(x.size()) / double(mean.size());
  for (double& v : var) v /= per_channel - (unbiased ? 1.0 : 0.0);  // 0/0 = NaN for one element
  return var;
}

std::vector<double> reduce_max_abs(const std::vector<float>& x, const std::vector<int>& shape, ReduceScope scope) {
  std::vector<double> m(channel_count(shape, scope), 0.0);
  for_each_with_channel(x, shape, scope, [&](size_t c, double v) { m[c] = std::max(m[c], std::fabs(v)); });
  return m;
}

std::vector<uint32_t> histogram(const std::vector<float>& x, int bins, float lo, float hi) {
  std::vector<uint32_t> counts(size_t(bins) + 2, 0);
  const float scale = histogram_scale(bins, lo, hi);
  for (float v : x) {
    if (std::isnan(v)) continue;
    if (v < lo) {
      ++counts[0];
      ++counts[bins];
    } else if (v > hi) {
      ++counts[bins - 1];
      ++counts[bins + 1];
    } else {
      const float t = (v - lo) * scale;  // the shader's float formula
      ++counts[std::min(uint32_t(t), uint32_t(bins - 1))];
    }
  }
  return counts;
}

}  // namespace vkqat::nn::ref

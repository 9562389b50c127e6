#include "quant/common.h"

#include <algorithm>
#include <string>

#include "backend/error.h"
#include "quant/plan.h"

namespace vkqat::quant {

void check_bits(const char* op, int bits) {
  if (bits < 1 || bits > kMaxKernelBits)
    throw Error(std::string(op) + ": bits must be in 1.." + std::to_string(kMaxKernelBits) +
                " (32 = full precision skips the quantizer), got " +
                std::to_string(bits));
}

Levels levels(int bits) {
  check_bits("quantizer", bits);
  Levels l;
  l.n = float((1 << bits) - 1);
  l.inv_n = 1.f / l.n;
  return l;
}

void tanh_sech2(float x, float& t, float& sech2) {
  const float ax = std::fabs(x);
  if (ax < 0.625f) {
    const float z = x * x;
    // Literals converted double -> float, as glslang converts the shader's literals.
    const float c1 = float(-5.70498872745e-3), c2 = float(2.06390887954e-2), c3 = float(-5.37397155531e-2),
                c4 = float(1.33314422036e-1), c5 = float(-3.33332819422e-1);
    const float poly = ((((c1 * z + c2) * z + c3) * z + c4) * z + c5) * z;
    t = poly * x + x;
    sech2 = 1.f - t * t;
  } else {
    const float e = 2.f / (std::exp(2.f * ax) + 1.f);
    const float tv = 1.f - e;
    t = x < 0.f ? -tv : tv;
    sech2 = e * (2.f - e);
  }
}

int64_t quant_scratch_numel(const Context& ctx, const std::vector<int>& shape, ReduceScope scope) {
  int64_t need = nn::reduce_scratch_numel(ctx, shape, scope);
  for (bool vec4 : {false, true}) {
    const detail::Plan plan = detail::make_plan(ctx, shape, scope, detail::PlanKind::Reduce, vec4);
    need = std::max<int64_t>(need, int64_t(plan.invocations) * 2);  // min/max partials are pairs
  }
  return need;
}

ReduceScope quant_scope(QuantTarget target, bool per_channel) {
  if (!per_channel) return ReduceScope::Tensor;
  return target == QuantTarget::Weight ? ReduceScope::Rows : ReduceScope::Channels;
}

std::vector<int> channel_of_elements(const std::vector<int>& shape, ReduceScope scope) {
  int64_t numel = 1;
  for (int d : shape) numel *= d;
  std::vector<int> channel(size_t(numel), 0);
  if (scope == ReduceScope::Tensor) return channel;
  const int64_t channels = detail::channel_count("channel_of_elements", shape, scope);
  const int64_t outer = scope == ReduceScope::Channels ? shape[0] : 1;
  const int64_t inner = numel / outer / channels;
  for (int64_t i = 0; i < numel; ++i) channel[size_t(i)] = int((i / inner) % channels);
  return channel;
}

Tensor make_quant_scratch(Context& ctx, const std::vector<int>& shape, ReduceScope scope) {
  return Tensor(ctx, {int(quant_scratch_numel(ctx, shape, scope))});
}

}  // namespace vkqat::quant

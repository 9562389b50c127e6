#pragma once
// Shared pieces of the quantizer ops (src/quant): bit-width checks, the level constants, the
// rounding every quantizer uses, and the scratch tensor the ops' reductions need.
//
// Bit-exactness contract: the shaders (shaders/quant_*.glsl) and the CPU references
// (namespace vkqat::quant::ref) evaluate the same float formulas in the same order, with
// every constant that is not a tensor value (n, 1/n, ...) computed once here on the host and
// passed to the shader as a push constant. Round is round-half-away-from-zero in both
// (GLSL's round() is implementation-defined at .5). So a forward lands on the same level on
// both sides whenever the pre-round value is not within a few ulp of a .5 tie; outputs are
// products of the level with a scale computed by correctly rounded float operations
// (no FMA contraction on either side) and therefore equal too.
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "backend/recording.h"
#include "nn/ops/reduce.h"
#include "nn/tensor.h"

namespace vkqat::quant {

using nn::ReduceScope;
using nn::Tensor;

// Smallest alpha / step size / scale a quantizer divides by (MIN_SCALE in the shaders).
constexpr float kMinScale = float(1e-8);

// Throws Error("<op>: bits must be in 1..24, got <bits>") unless 1 <= bits <= kMaxKernelBits.
// The user's flags stay 1..8 (QuantConfig::validate, --bits-config); the float kernels are
// exact up to 24 bits (2^24 - 1 levels are a float), which the network gradient checks use to make rounding negligible
// (tests/net_gradcheck.h). The integer paths (grids, export) are for policy-made quantizers.
constexpr int kMaxKernelBits = 24;
void check_bits(const char* op, int bits);
// "4-bit", or "fp32" for 32 (what a quantizer's describe() says).
inline std::string bits_str(int bits) { return bits == 32 ? "fp32" : std::to_string(bits) + "-bit"; }

// n = 2^k - 1 levels above zero, and 1/n, both as the float the shaders get.
struct Levels {
  float n = 1, inv_n = 1;
};
Levels levels(int bits);

// Round half away from zero, exactly as round_half_away() in quant_common.glsl.
inline float round_half_away(float x) {
  const float a = std::fabs(x) + 0.5f;
  return (x > 0.f ? 1.f : x < 0.f ? -1.f : 0.f) * std::floor(a);
}

// tanh(x) and 1 - tanh(x)^2 as quant_common.glsl computes them (Cephes tanhf).
void tanh_sech2(float x, float& t, float& sech2);

// F32 elements of scratch every quant op on a tensor of `shape` reducing over `scope` needs
// (covers nn::reduce_* too). One scratch may serve several ops recorded one after another.
int64_t quant_scratch_numel(const Context& ctx, const std::vector<int>& shape, ReduceScope scope);
Tensor make_quant_scratch(Context& ctx, const std::vector<int>& shape, ReduceScope scope = ReduceScope::Tensor);

// Which dimension is "the channel" for per-channel quantizers, and how elements per step
// are counted: weights (OIHW, [out, in]) use dim 0; activations (NCHW) use dim 1 and
// exclude the batch dimension from per-step counts (LSQ's N).
enum class QuantTarget { Weight, Activation };

// The reduction scope of a quantizer: ReduceScope::Tensor, or per channel Rows (weights) /
// Channels (activations).
ReduceScope quant_scope(QuantTarget target, bool per_channel);

// Channel index of every element of `shape` in `scope` (CPU references).
std::vector<int> channel_of_elements(const std::vector<int>& shape, ReduceScope scope);

namespace ref {
// Output of a reference forward: y, and the value r whose round_half_away() gives the level
// index (before clamping, where the quantizer clamps). Tests keep r away from .5 ties,
// where one ulp decides the level.
struct Quantized {
  std::vector<float> y, r;
};
}  // namespace ref

}  // namespace vkqat::quant

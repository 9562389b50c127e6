#pragma once
// PACT activation quantizer with a learned clipping level alpha (METHODS.md §2), and both
// alpha gradients. k = bits, n = 2^k - 1, round = half away from zero.
//   forward   y = clamp(x, 0, alpha); yq = round(y n / alpha) alpha / n
//             (as computed: r = y * (n / alpha), yq = round(r) * (alpha * (1/n)))
//   backward  dx = g [0 <= x < alpha]                                      (STE)
//             Original:   dalpha = sum(g [x >= alpha])
//             Calibrated: dalpha = sum_{x >= alpha} g + sum_{x < alpha} g (q(x~/alpha) - x~/alpha)
//                         with x~ = max(x, 0), q(u) = round(n u) / n   (CG-PACT, SAT's half)
// Learned parameter: alpha, a 1-element device tensor read from its buffer on every replay
// (never a push constant), so the optimizer's in-place update is seen by the next step. It
// is used as max(alpha, kMinScale). Its gradient is written to (accumulate: added into) a
// 1-element tensor `dalpha` by a deterministic two-pass device reduction (no float atomics):
// the trainer hooks that tensor into SGD without weight decay. Initial alpha: 8 for conv
// activations, 10 before the last FC (kPactAlphaConv / kPactAlphaFc).
//
// The backward is one pass over x and g writing dx and per-invocation partials of dalpha,
// plus a small merge pass. It reads the forward input x (not yq): the masks and the CG term
// need x itself.
//
// Symmetric (signed) PACT, for activations that can be negative (MobileNetV2's linear
// bottlenecks: a batchnorm or residual sum feeding a conv with no ReLU between). k >= 2,
// n = 2^(k-1) - 1 levels per side (pact_signed_levels), the code range [-n, n]:
//   forward   u = clamp(x, -alpha, alpha) / alpha; yq = alpha round(n u) / n
//   backward  dx = g [|x| <= alpha]
//             Original:   dalpha = sum_{x > alpha} g - sum_{x < -alpha} g
//             Calibrated: + sum_{|x| <= alpha} g (q(u) - u),   q(u) = round(n u) / n
// Derivation (what autograd gives for alpha * STE_round(n clamp(x, -alpha, alpha) / alpha) / n,
// the STE holding c = round(n u) - n u constant): inside, yq = alpha (n x / alpha + c) / n =
// x + alpha c / n, so dyq/dx = 1 and dyq/dalpha = c / n = q(u) - u; above, u = 1 and yq =
// alpha (round(n) = n), so dyq/dalpha = 1; below, yq = -alpha, dyq/dalpha = -1 and dyq/dx
// = 0 outside. Original PACT keeps only the clipped terms, as in the unsigned form. At x =
// +-alpha the element counts as inside (q(+-1) - (+-1) = 0, so only dx sees the choice).
#include <vector>

#include "quant/common.h"

namespace vkqat::quant {

enum class PactGradient { Original, Calibrated };

constexpr float kPactAlphaConv = 8.f, kPactAlphaFc = 10.f;

void pact_forward(Recording& rec, const Tensor& x, const Tensor& alpha, Tensor& y, int bits);
// dx (+)= ..., dalpha (+)= ... . scratch: make_quant_scratch(ctx, x.shape()).
void pact_backward(Recording& rec, const Tensor& x, const Tensor& alpha, const Tensor& dy, Tensor& dx,
                   bool accumulate_dx, Tensor& dalpha, bool accumulate_dalpha, Tensor& scratch, int bits,
                   PactGradient gradient);

// The alpha gradient when a BN backward applied PACT's backward in its own pass
// (nn::BnQuantBackward): dalpha (+)= the sum of its per-channel partials (F32 [C]).
void pact_merge_clip_grad(Recording& rec, const Tensor& partials, Tensor& dalpha, bool accumulate);

// n = 2^(k-1) - 1 and 1/n; throws Error naming `op` for bits outside 2..kMaxKernelBits (the
// policy gives a run 2..8; 24 is for the network gradient checks, as unsigned PACT's).
Levels pact_signed_levels(const char* op, int bits);
void pact_signed_forward(Recording& rec, const Tensor& x, const Tensor& alpha, Tensor& y, int bits);
void pact_signed_backward(Recording& rec, const Tensor& x, const Tensor& alpha, const Tensor& dy, Tensor& dx,
                          bool accumulate_dx, Tensor& dalpha, bool accumulate_dalpha, Tensor& scratch, int bits,
                          PactGradient gradient);

namespace ref {
Quantized pact_forward(const std::vector<float>& x, float alpha, int bits);
struct PactGrads {
  std::vector<float> dx;
  double dalpha = 0;
};
// dalpha summed in double; the CG term evaluated in double.
PactGrads pact_backward(const std::vector<float>& x, float alpha, const std::vector<float>& g, int bits,
                        PactGradient gradient);
// sum_{x < alpha} g (q(x~/alpha) - x~/alpha): what CG-PACT adds to the original gradient.
double pact_quantization_error_term(const std::vector<float>& x, float alpha, const std::vector<float>& g, int bits);
Quantized pact_signed_forward(const std::vector<float>& x, float alpha, int bits);
// The symmetric form's gradients (dalpha in double, the CG term in double).
PactGrads pact_signed_backward(const std::vector<float>& x, float alpha, const std::vector<float>& g, int bits,
                               PactGradient gradient);
}  // namespace ref

}  // namespace vkqat::quant

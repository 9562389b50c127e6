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
}  // namespace ref

}  // namespace vkqat::quant

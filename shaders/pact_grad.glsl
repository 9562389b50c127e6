// PACT's backward for one element (src/quant/pact.h), shared by quant_pact_bwd and the BN
// backward that applies it in its own pass (batchnorm2d_bwd_quant): returns dx = g for
// 0 <= x < alpha (else 0) and sets alpha_term, the element's share of dalpha: g for
// x >= alpha, and with `calibrated` CG-PACT's g (round(r) - r) / n below it, r = max(x, 0) * n / alpha.
// scale = n / alpha, inv_n = 1 / n.
#ifndef VKQAT_PACT_GRAD_GLSL
#define VKQAT_PACT_GRAD_GLSL
#include "quant_round.glsl"
float pact_grad(float x, float g, float alpha, float scale, float inv_n, bool calibrated, out float alpha_term) {
  bool clipped = x >= alpha;
  precise float r = max(x, 0.0) * scale;
  precise float err = g * ((round_half_away(r) - r) * inv_n);
  alpha_term = clipped ? g : (calibrated ? err : 0.0);
  return x >= 0.0 && !clipped ? g : 0.0;
}

// Symmetric (signed) PACT's backward for one element: dx = g for |x| <= alpha; alpha_term
// = g above alpha, -g below -alpha, and with `calibrated` g (round(r) - r) / n inside,
// r = x * n / alpha (the derivation is in src/quant/pact.h).
float pact_signed_grad(float x, float g, float alpha, float scale, float inv_n, bool calibrated, out float alpha_term) {
  bool inside = abs(x) <= alpha;
  precise float r = clamp(x, -alpha, alpha) * scale;
  precise float err = g * ((round_half_away(r) - r) * inv_n);
  alpha_term = x > alpha ? g : (x < -alpha ? -g : (calibrated ? err : 0.0));
  return inside ? g : 0.0;
}
#endif

#pragma once
// `vkqat export`: a quantization-aware checkpoint -> the integer model of int_model.h.
// Weight codes are recomputed from the latent weights with the CPU reference DoReFa
// quantizer (ref::dorefa_weight_forward), so they are the levels training used; BN (eval
// statistics) is folded per channel; each PACT / DoReFa activation quantizer becomes the
// requantization of the layer that feeds it (multiplier, shift and bias chosen per output
// channel, the multiplier in (2^29, 2^30] where the bias allows); SAT's factor
// 1/sqrt(n Var[Wq]) is folded into the fc's logit scale (and a conv's multiplier with
// --sat-conv); the aux module is not exported.
// Supported: resnet20/32/56 checkpoints of --quantizer cgpact, dorefa-pact or dorefa with
// every weight at 2..8 bits and every activation at 1..8 bits; anything else (an FP32
// checkpoint, lsq, minmax, 1-bit weights, different normalization per input channel)
// throws Error naming the checkpoint and what is unsupported.
#include <string>

#include "quant/int_model.h"

namespace vkqat::quant {

IntModel export_int_model(const std::string& checkpoint);

}  // namespace vkqat::quant

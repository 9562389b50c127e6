#pragma once
// `vkqat export`: a quantization-aware checkpoint -> the integer model of int_model.h.
// Weight codes are recomputed from the latent weights with the CPU reference DoReFa
// quantizer (ref::dorefa_weight_forward), so they are the levels training used; BN (eval
// statistics) is folded per channel; each PACT / DoReFa activation quantizer becomes the
// requantization of the layer that feeds it (multiplier, shift and bias chosen per output
// channel, the multiplier in (2^29, 2^30] where the bias allows); SAT's factor
// 1/sqrt(n Var[Wq]) is folded into the fc's logit scale (and a conv's multiplier with
// --sat-conv); the aux module is not exported.
// The network is the checkpoint's model description (built-in or --model-file), walked in
// order (int_model.h): conv + BN + quantized ReLU / ReLU6 -> a requantized conv (the stem,
// reading pixels, folds the normalization), a residual add + quantized ReLU -> the main
// branch's conv requantized with the shortcut (identity codes, or a BN'd shortcut conv's raw
// accumulator), max pool on codes, global average pool + the classifier's input quantizer +
// the final linear. Depthwise convs are integer convs of one input channel per group. A linear
// bottleneck (a batchnorm or add with GraphNetwork's signed quantizer "LAYER.act", symmetric
// PACT / CG-PACT) becomes the requantization of its conv(s) to signed offset codes (levels 2n,
// offset n, int_model.h); the convs reading them subtract the offset, a residual reading them
// as its shortcut has the offset folded into its bias.
// Supported: --quantizer cgpact, dorefa-pact or dorefa with every weight at 2..8 bits and
// every activation at 1..8 bits. Everything else throws Error naming the checkpoint and,
// for the graph, the layer with no integer form: an FP32 checkpoint, lsq, minmax, 1-bit
// weights, different normalization per input channel, a pre-activation BN (preact-resnet),
// an add or batchnorm read by a conv with no activation quantizer after it (a linear
// bottleneck trained with full-precision activations there: training keeps the value in
// float, so an integer model could not be exact), grouped non-depthwise convs, conv bias, a
// linear other than the final classifier. Signed LSQ (--aquant lsq) is refused with the rest
// of LSQ (its asymmetric signed grid, Qn = Qp + 1, would fit offset codes, but LSQ has no
// integer export yet).
#include <string>

#include "quant/int_model.h"

namespace vkqat::quant {

IntModel export_int_model(const std::string& checkpoint);

}  // namespace vkqat::quant

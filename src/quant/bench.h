#pragma once
// `vkqat bench` entries for the quantizer ops (src/quant) on a ResNet-sized activation
// (128x16x28x28) and conv weights (16x16x3x3, 64x64x3x3): time per op and achieved
// bandwidth (bytes the kernels must read + write / time).
#include <vector>

#include "nn/bench.h"

namespace vkqat::quant {

std::vector<nn::BenchRecord> bench_quant(Context& ctx, bool quick);

}  // namespace vkqat::quant

#pragma once
// `vkqat bench` entries for the integer inference path: integer conv (packed 4-bit and
// 2-bit weights, int32 codes, fused requantization) vs fp32 conv2d_forward on the same
// ResNet-20 shapes at batch 64.
#include <vector>

#include "nn/bench.h"

namespace vkqat::quant {

std::vector<nn::BenchRecord> bench_int(Context& ctx, bool quick);

}  // namespace vkqat::quant

#pragma once
// `vkqat bench --only data`: images/s of the folder pipeline (JPEG decode + 224 px
// RandomResizedCrop + flip + normalization) with 1 worker and with every core, and of the
// decoded-image cache, on generated ImageNet-like JPEGs (500x375).
#include <vector>

#include "nn/bench.h"

namespace vkqat::nn {
std::vector<BenchRecord> bench_data_pipeline(bool quick);
}

#pragma once
// `vkqat bench --only data`: images/s of the folder pipeline (JPEG decode + 224 px
// RandomResizedCrop + flip + normalization) with 1 worker and with every core, and of the
// decoded-image cache, on generated ImageNet-like JPEGs (500x375). With keep_dir the
// folder is written there (or reused when keep_dir/train exists) and left for other tools
// (scripts/torchvision_data_bench.py times torchvision on the same files); otherwise it is
// a temporary directory.
#include <string>
#include <vector>

#include "nn/bench.h"

namespace vkqat::nn {
std::vector<BenchRecord> bench_data_pipeline(bool quick, const std::string& keep_dir = "");
}

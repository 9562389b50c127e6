#pragma once
// The batch-norm training kernels' configurations for tests: each channel walk
// (VKQAT_BN_WALK) with one workgroup per channel, and the two-level (split) reduction with
// the chunks the device would get and with small fixed chunks (many chunks, short tails).
// Each device takes one walk and, per layer shape, one reduction: tests cover them all.
#include <doctest/doctest.h>

#include <cstdint>
#include <string>

#include "nn/ops/batchnorm2d.h"
#include "testutil.h"

namespace vkqat::test {

struct BnKernelConfig {
  const char* walk;
  nn::BnReduction reduction;
  uint32_t chunk;  // elements per chunk (split only), 0: what the device gets
  std::string str() const {
    return std::string(walk) + (reduction == nn::BnReduction::Split ? " split" : " single") +
           (chunk ? " chunk " + std::to_string(chunk) : "");
  }
};

inline const BnKernelConfig kBnKernelConfigs[] = {
    {"contiguous", nn::BnReduction::Single, 0}, {"interleaved", nn::BnReduction::Single, 0},
    {"contiguous", nn::BnReduction::Split, 0},  {"interleaved", nn::BnReduction::Split, 0},
    {"contiguous", nn::BnReduction::Split, 7},  {"interleaved", nn::BnReduction::Split, 5},
};

// Selects a reduction for one scope (then back to Auto).
class ScopedBnReduction {
 public:
  explicit ScopedBnReduction(nn::BnReduction r, uint32_t chunk = 0) { nn::set_bn_reduction(r, chunk); }
  ~ScopedBnReduction() { nn::set_bn_reduction(nn::BnReduction::Auto); }
  ScopedBnReduction(const ScopedBnReduction&) = delete;
  ScopedBnReduction& operator=(const ScopedBnReduction&) = delete;
};

// Selects a configuration for one scope (then back to the defaults).
class ScopedBnKernelConfig {
 public:
  explicit ScopedBnKernelConfig(const BnKernelConfig& c) : walk_("VKQAT_BN_WALK", c.walk), reduction_(c.reduction, c.chunk) {}

 private:
  ScopedEnv walk_;
  ScopedBnReduction reduction_;
};

}  // namespace vkqat::test

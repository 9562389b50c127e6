#pragma once
// Helpers shared by the tests of src/quant (tests/test_quant_*.cpp).
#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "nn/tensor.h"
#include "quant/common.h"
#include "testutil.h"

namespace vkqat::test::quant {

inline const std::vector<int>& bit_widths() {
  static const std::vector<int> bits = {1, 2, 3, 4, 8};
  return bits;
}

inline int64_t numel(const std::vector<int>& shape) {
  int64_t n = 1;
  for (int d : shape) n *= d;
  return n;
}

// Seeded random shapes of the given rank with dimensions in [1, max_dim] (odd sizes, ones).
inline std::vector<std::vector<int>> random_shapes(uint32_t seed, int count, int rank, int max_dim = 9) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> dim(1, max_dim);
  std::vector<std::vector<int>> shapes(size_t(count), std::vector<int>(size_t(rank), 1));
  for (auto& s : shapes)
    for (int& d : s) d = dim(rng);
  return shapes;
}

// Distance of r to the nearest rounding tie (k + 0.5).
inline double tie_distance(float r) {
  const double f = double(r) - std::floor(double(r));
  return std::fabs(f - 0.5);
}

// Redraws elements of x (uniform [lo, hi)) until pre_round(x)[i] is at least `margin` from
// every .5 tie and from each value in `avoid` (clamp boundaries). pre_round gets the whole
// vector because the quantizer's statistics (max, ...) depend on it. Returns x.
inline std::vector<float> keep_away_from_ties(std::vector<float> x, float lo, float hi, uint32_t seed,
                                              const std::function<std::vector<float>(const std::vector<float>&)>& pre_round,
                                              double margin = 1e-4, const std::vector<float>& avoid = {}) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  for (int round = 0; round < 100; ++round) {
    const std::vector<float> r = pre_round(x);
    int redrawn = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      bool bad = tie_distance(r[i]) < margin;
      for (float b : avoid) bad = bad || std::fabs(double(r[i]) - double(b)) < margin;
      if (bad) x[i] = dist(rng), ++redrawn;
    }
    if (!redrawn) return x;
  }
  FAIL("could not keep the inputs away from rounding ties");
  return x;
}

// Exact comparison of a device forward with the reference: the level index
// round_half_away(r) must agree (as implied by equal outputs) and the float outputs must be
// identical. Reports the first mismatch.
inline void check_exact(const std::vector<float>& got, const std::vector<float>& want, const std::string& what) {
  REQUIRE_MESSAGE(got.size() == want.size(), what << ": size " << got.size() << " vs " << want.size());
  size_t bad = 0, first = 0;
  for (size_t i = 0; i < got.size(); ++i)
    if (!(got[i] == want[i])) {
      if (!bad) first = i;
      ++bad;
    }
  CHECK_MESSAGE(bad == 0, what << ": " << bad << " of " << got.size() << " differ; first [" << first << "] got "
                               << (bad ? got[first] : 0.f) << " want " << (bad ? want[first] : 0.f));
}

// Level indices: `got` are the device outputs mapped back to level units (e.g. y / step),
// `want` the reference's integer levels. Each got value must be an integer (to 1e-4: the
// inverse map itself rounds) equal to want.
inline void check_levels(const std::vector<double>& got, const std::vector<double>& want, const std::string& what) {
  REQUIRE(got.size() == want.size());
  size_t bad = 0, first = 0;
  for (size_t i = 0; i < got.size(); ++i)
    if (!(std::fabs(got[i] - want[i]) <= 1e-4)) {
      if (!bad) first = i;
      ++bad;
    }
  CHECK_MESSAGE(bad == 0, what << ": " << bad << " level indices differ; first [" << first << "] got "
                               << (bad ? got[first] : 0.0) << " want " << (bad ? want[first] : 0.0));
}

inline std::string bits_str(int bits) { return std::to_string(bits) + " bit"; }

}  // namespace vkqat::test::quant

// Timings of the quantizer ops (quant::bench_quant), skipped by default: run with
//   vkqat_tests -ts=quant-bench --no-skip
#include <cstdio>

#include "quant/bench.h"
#include "testutil.h"

TEST_CASE("quantizer op timings" * doctest::test_suite("quant-bench") * doctest::skip()) {
  for (const auto& r : vkqat::quant::bench_quant(vkqat::test::ctx(), false))
    std::printf("%-60s %8.3f ms %7.2f GB/s  %s\n", r.name.c_str(), r.ms, r.gbps, r.variant.c_str());
}

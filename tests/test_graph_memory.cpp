// The buffer-reuse planner (nn/model/graph_memory.h) on synthetic lifetime lists: buffers live
// at the same step never share memory, disjoint lifetimes do, offsets are aligned, and the
// pool is never below the largest live sum (nor far above it on these lists).
#include <doctest/doctest.h>

#include <random>

#include "backend/error.h"
#include "nn/model/graph_memory.h"

using namespace vkqat;
using nn::BufferLifetime;

namespace {
// Every pair live at a common step occupies disjoint aligned ranges inside the pool.
void check_valid(const std::vector<BufferLifetime>& b, const nn::MemoryPlan& p, uint64_t align) {
  REQUIRE(p.offsets.size() == b.size());
  auto size = [&](size_t i) { return (b[i].bytes + align - 1) / align * align; };
  for (size_t i = 0; i < b.size(); ++i) {
    CHECK(p.offsets[i] % align == 0);
    CHECK(p.offsets[i] + size(i) <= p.pool_bytes);
    for (size_t j = i + 1; j < b.size(); ++j) {
      const bool live_together = b[i].first <= b[j].last && b[j].first <= b[i].last;
      const bool overlap = p.offsets[i] < p.offsets[j] + size(j) && p.offsets[j] < p.offsets[i] + size(i);
      if (live_together) CHECK_MESSAGE(!overlap, "buffers " << i << " and " << j);
    }
  }
}
}  // namespace

TEST_CASE("memory planner: a chain of short lifetimes shares one buffer, overlapping ones do not") {
  // forward activations a0 -> a1 -> a2, each read only by the next step
  const std::vector<BufferLifetime> chain = {{1000, 0, 1}, {1000, 1, 2}, {1000, 2, 3}, {1000, 3, 4}};
  const nn::MemoryPlan p = nn::plan_memory(chain, 256);
  check_valid(chain, p, 256);
  CHECK(p.pool_bytes == 2 * 1024);  // two live at each step, 1000 rounded up to 1024
  CHECK(p.offsets[0] == p.offsets[2]);
  CHECK(p.offsets[1] == p.offsets[3]);
  CHECK(nn::peak_live_bytes(chain, 256) == 2 * 1024);
  // All live at once: nothing shared.
  const std::vector<BufferLifetime> all = {{100, 0, 9}, {300, 0, 9}, {200, 5, 9}};
  const nn::MemoryPlan q = nn::plan_memory(all, 4);
  check_valid(all, q, 4);
  CHECK(q.pool_bytes == 600);
}

TEST_CASE("memory planner: random lifetime lists give valid plans near the live-bytes bound") {
  std::mt19937 rng(3);
  for (int round = 0; round < 50; ++round) {
    CAPTURE(round);
    const int n = std::uniform_int_distribution<int>(1, 60)(rng);
    std::vector<BufferLifetime> b(static_cast<size_t>(n));
    for (auto& x : b) {
      x.bytes = std::uniform_int_distribution<uint64_t>(1, 5000)(rng);
      x.first = std::uniform_int_distribution<int>(0, 40)(rng);
      x.last = x.first + std::uniform_int_distribution<int>(0, 10)(rng);
    }
    const uint64_t align = round % 2 ? 64 : 1;
    const nn::MemoryPlan p = nn::plan_memory(b, align);
    check_valid(b, p, align);
    const uint64_t bound = nn::peak_live_bytes(b, align);
    uint64_t sum = 0;
    for (const auto& x : b) sum += (x.bytes + align - 1) / align * align;
    CHECK(p.pool_bytes >= bound);
    CHECK(p.pool_bytes <= sum);
    CHECK(double(p.pool_bytes) <= 1.5 * double(bound));  // greedy by size stays close on such lists
  }
}

TEST_CASE("memory planner: bad lifetimes are refused naming the buffer") {
  CHECK_THROWS_WITH_AS(nn::plan_memory({{10, 0, 1}, {10, 3, 2}}, 4), doctest::Contains("buffer 1 ends"), Error);
  CHECK_THROWS_WITH_AS(nn::plan_memory({{10, 0, 1}}, 0), doctest::Contains("alignment"), Error);
  CHECK(nn::plan_memory({}, 4).pool_bytes == 0);
}

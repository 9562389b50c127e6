#include "nn/model/graph_memory.h"

#include <algorithm>
#include <map>
#include <numeric>
#include <string>

#include "backend/error.h"

namespace vkqat::nn {

namespace {
uint64_t aligned(uint64_t bytes, uint64_t alignment) { return (bytes + alignment - 1) / alignment * alignment; }

void check(const std::vector<BufferLifetime>& buffers, uint64_t alignment) {
  if (alignment == 0) throw Error("plan_memory: alignment must be positive");
  for (size_t i = 0; i < buffers.size(); ++i)
    if (buffers[i].first > buffers[i].last)
      throw Error("plan_memory: buffer " + std::to_string(i) + " ends (step " + std::to_string(buffers[i].last) +
                  ") before it starts (step " + std::to_string(buffers[i].first) + ")");
}
}  // namespace

MemoryPlan plan_memory(const std::vector<BufferLifetime>& buffers, uint64_t alignment) {
  check(buffers, alignment);
  std::vector<size_t> order(buffers.size());
  std::iota(order.begin(), order.end(), size_t(0));
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return buffers[a].bytes > buffers[b].bytes; });
  MemoryPlan plan;
  plan.offsets.assign(buffers.size(), 0);
  std::vector<size_t> placed;
  for (size_t i : order) {
    const BufferLifetime& b = buffers[i];
    const uint64_t size = aligned(b.bytes, alignment);
    // The address ranges of placed buffers live at one of b's steps, by start.
    std::vector<std::pair<uint64_t, uint64_t>> busy;
    for (size_t j : placed)
      if (buffers[j].first <= b.last && b.first <= buffers[j].last)
        busy.push_back({plan.offsets[j], plan.offsets[j] + aligned(buffers[j].bytes, alignment)});
    std::sort(busy.begin(), busy.end());
    uint64_t at = 0;
    for (const auto& [lo, hi] : busy) {
      if (lo >= at + size) break;  // fits in the gap before this range
      at = std::max(at, hi);
    }
    plan.offsets[i] = at;
    plan.pool_bytes = std::max(plan.pool_bytes, at + size);
    placed.push_back(i);
  }
  return plan;
}

uint64_t peak_live_bytes(const std::vector<BufferLifetime>& buffers, uint64_t alignment) {
  check(buffers, alignment);
  std::map<int, int64_t> delta;  // step -> change of live bytes
  for (const BufferLifetime& b : buffers) {
    delta[b.first] += int64_t(aligned(b.bytes, alignment));
    delta[b.last + 1] -= int64_t(aligned(b.bytes, alignment));
  }
  int64_t live = 0, peak = 0;
  for (const auto& [step, d] : delta) peak = std::max(peak, live += d);
  return uint64_t(peak);
}

}  // namespace vkqat::nn

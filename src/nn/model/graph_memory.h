#pragma once
// Buffer reuse across lifetimes (issue 18): buffers whose lifetimes do not overlap may share
// memory. A lifetime is the range of steps (e.g. positions in the recorded forward + backward
// order) in which a buffer holds a value someone still reads; plan_memory places every buffer
// at an offset of one pool so that buffers live at the same step never overlap in memory.
// Greedy best known heuristic for this (NP-hard) packing: largest buffers first, each at the
// lowest aligned offset free of the buffers already placed that are live at any of its steps
// (TensorFlow Lite's and MXNet's memory planners do the same).
// GraphNetwork places its activation and gradient buffers with it (graph_network_buffers.cpp).
#include <cstdint>
#include <vector>

namespace vkqat::nn {

struct BufferLifetime {
  uint64_t bytes = 0;
  int first = 0, last = 0;  // steps in which it is live, inclusive
};

struct MemoryPlan {
  std::vector<uint64_t> offsets;  // per buffer, multiples of the alignment
  uint64_t pool_bytes = 0;        // the pool they all fit in
};

// Throws Error naming the buffer index for first > last or a zero alignment.
MemoryPlan plan_memory(const std::vector<BufferLifetime>& buffers, uint64_t alignment);

// The largest sum of (aligned) bytes live at one step: no plan can use less.
uint64_t peak_live_bytes(const std::vector<BufferLifetime>& buffers, uint64_t alignment);

}  // namespace vkqat::nn

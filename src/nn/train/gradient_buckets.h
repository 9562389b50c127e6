#pragma once
// Data-parallel gradient buckets (--bucket-mb): where each trained parameter's gradient lies
// in the host-visible all-reduce buffer, and which gradients are all-reduced together.
// Gradients are ordered by when the backward finishes them (the last layers' first), so a
// bucket's all-reduce starts while the backward still computes the earlier layers'.
#include <cstdint>
#include <vector>

#include "nn/model/parameter.h"

namespace vkqat {
class Recording;
}

namespace vkqat::nn {

struct GradientLayout {
  struct Bucket {
    std::vector<size_t> params;  // indices into the parameter list, in layout order
    uint64_t offset = 0, bytes = 0;  // contiguous slice of the flat buffer (alignment gaps included)
    // The recorded command after which every gradient of this bucket is final (-1: before
    // any command). Never before an earlier bucket's: buckets start in order.
    int64_t ready_after = -1;
  };
  std::vector<uint64_t> offsets;  // per parameter (list order): byte offset in the flat buffer
  std::vector<Bucket> buckets;
  uint64_t bytes = 0;  // of the flat buffer
};

// Groups the parameters into buckets of at least bucket_bytes (the last may be smaller),
// in the order their gradients become final (final_after[i]: the last command writing
// parameter i's gradient, -1 when none; ties keep list order). bucket_bytes 0: one bucket
// in list order (the single all-reduce). Each gradient starts at a multiple of align.
GradientLayout plan_gradient_buckets(const std::vector<Parameter*>& params, const std::vector<int64_t>& final_after,
                                     uint64_t bucket_bytes, uint64_t align);

// The last command of `probe` writing each parameter's gradient (Recording::last_writer):
// probe holds a recording of the step up to the end of the backward. A gradient is final
// only after every writer (the network's backward, the aux module's, which adds into the
// network's gradients at its taps, the quantizers' partial-sum reductions), and the
// recorder's access tracking sees them all.
std::vector<int64_t> gradient_final_commands(const Recording& probe, const std::vector<Parameter*>& params);

// The same buckets on every rank: rank 0's grouping (parameter order and bucket ends) is
// broadcast; each rank keeps its own ready_after (the maximum over its bucket's
// parameters of its own final_after, made non-decreasing), as its command stream may
// differ from rank 0's on another kind of device.
void agree_on_buckets(GradientLayout& layout, const std::vector<Parameter*>& params,
                      const std::vector<int64_t>& final_after, uint64_t align);

}  // namespace vkqat::nn

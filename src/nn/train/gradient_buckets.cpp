#include "nn/train/gradient_buckets.h"

#include <algorithm>
#include <numeric>
#include <string>

#include "backend/error.h"
#include "backend/recording.h"
#include "nn/train/distributed.h"

namespace vkqat::nn {
namespace {
// Offsets and buckets for the given grouping (each group a bucket, in order).
GradientLayout layout_from_groups(const std::vector<Parameter*>& params, const std::vector<std::vector<size_t>>& groups,
                                  const std::vector<int64_t>& final_after, uint64_t align) {
  GradientLayout layout;
  layout.offsets.assign(params.size(), 0);
  uint64_t at = 0;
  int64_t ready = -1;
  for (const std::vector<size_t>& group : groups) {
    GradientLayout::Bucket b;
    b.offset = at;
    b.params = group;
    for (size_t i : group) {
      layout.offsets[i] = at;
      at = (at + params[i]->grad.bytes() + align - 1) / align * align;
      ready = std::max(ready, final_after[i]);
    }
    b.bytes = at - b.offset;
    b.ready_after = ready;  // non-decreasing over the buckets
    layout.buckets.push_back(std::move(b));
  }
  layout.bytes = at;
  return layout;
}
}  // namespace

GradientLayout plan_gradient_buckets(const std::vector<Parameter*>& params, const std::vector<int64_t>& final_after,
                                     uint64_t bucket_bytes, uint64_t align) {
  std::vector<size_t> order(params.size());
  std::iota(order.begin(), order.end(), size_t(0));
  if (bucket_bytes > 0)
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return final_after[a] < final_after[b]; });
  std::vector<std::vector<size_t>> groups(1);
  uint64_t filled = 0;
  for (size_t i : order) {
    if (bucket_bytes > 0 && filled >= bucket_bytes) groups.emplace_back(), filled = 0;
    groups.back().push_back(i);
    filled += (params[i]->grad.bytes() + align - 1) / align * align;
  }
  if (groups.back().empty()) groups.pop_back();
  return layout_from_groups(params, groups, final_after, align);
}

std::vector<int64_t> gradient_final_commands(const Recording& probe, const std::vector<Parameter*>& params) {
  std::vector<int64_t> last;
  for (Parameter* p : params) last.push_back(probe.last_writer(p->grad.view()));
  return last;
}

void agree_on_buckets(GradientLayout& layout, const std::vector<Parameter*>& params,
                      const std::vector<int64_t>& final_after, uint64_t align) {
  if (dist::size() == 1) return;
  // Rank 0's groups as [parameters, buckets, then per bucket: size, parameter indices].
  std::vector<int64_t> flat{int64_t(params.size()), int64_t(layout.buckets.size())};
  for (const GradientLayout::Bucket& b : layout.buckets) {
    flat.push_back(int64_t(b.params.size()));
    for (size_t i : b.params) flat.push_back(int64_t(i));
  }
  int64_t n = int64_t(flat.size());
  dist::broadcast(&n, sizeof n);
  flat.resize(size_t(n));
  dist::broadcast(flat.data(), flat.size() * sizeof(int64_t));
  if (flat[0] != int64_t(params.size()))
    throw Error("rank " + std::to_string(dist::rank()) + " trains " + std::to_string(params.size()) +
                " parameter tensors, rank 0 " + std::to_string(flat[0]) + " (the ranks built different models)");
  std::vector<std::vector<size_t>> groups(static_cast<size_t>(flat[1]));
  size_t at = 2;
  for (std::vector<size_t>& g : groups) {
    const size_t count = size_t(flat[at++]);
    for (size_t k = 0; k < count; ++k) g.push_back(size_t(flat[at++]));
  }
  layout = layout_from_groups(params, groups, final_after, align);
}

}  // namespace vkqat::nn

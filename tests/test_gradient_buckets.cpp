// Data-parallel gradient buckets (plan_gradient_buckets): gradients ordered by when the
// backward finishes them, grouped into buckets of at least --bucket-mb, laid out aligned
// and contiguous in the flat all-reduce buffer. Random sizes and finishing points.
#include <algorithm>
#include <random>

#include "nn/model/parameter.h"
#include "nn/train/gradient_buckets.h"
#include "testutil.h"

using namespace vkqat;
using namespace vkqat::nn;

TEST_CASE("plan_gradient_buckets: finishing order, sizes, aligned contiguous slices" *
          doctest::test_suite("data-parallel")) {
  Context& ctx = test::ctx();
  std::mt19937 rng(5);
  for (int trial = 0; trial < 6; ++trial) {
    const int count = 1 + int(rng() % 12);
    std::vector<Parameter> storage;
    storage.reserve(size_t(count));
    std::vector<int64_t> final_after;
    for (int i = 0; i < count; ++i) {
      storage.emplace_back(ctx, "p" + std::to_string(i), std::vector<int>{1 + int(rng() % 700)}, true);
      final_after.push_back(int64_t(rng() % 6) - 1);  // -1: never written; ties likely
    }
    std::vector<Parameter*> params;
    for (Parameter& p : storage) params.push_back(&p);
    const uint64_t align = 256, bucket_bytes = 512 + rng() % 2000;
    CAPTURE(trial);
    CAPTURE(bucket_bytes);
    auto aligned = [&](size_t i) { return (params[i]->grad.bytes() + align - 1) / align * align; };

    const GradientLayout l = plan_gradient_buckets(params, final_after, bucket_bytes, align);
    std::vector<size_t> seen;
    uint64_t at = 0;
    int64_t ready = -1;
    for (size_t b = 0; b < l.buckets.size(); ++b) {
      const GradientLayout::Bucket& bk = l.buckets[b];
      REQUIRE(!bk.params.empty());
      CHECK(bk.offset == at);  // contiguous, in bucket order
      uint64_t sum = 0;
      int64_t most = -1;
      for (size_t i : bk.params) {
        CHECK(l.offsets[i] == bk.offset + sum);
        CHECK(l.offsets[i] % align == 0);
        sum += aligned(i);
        most = std::max(most, final_after[i]);
        seen.push_back(i);
      }
      CHECK(bk.bytes == sum);
      // Full buckets: at least bucket_bytes, and not one gradient more than needed.
      if (b + 1 < l.buckets.size()) {
        CHECK(bk.bytes >= bucket_bytes);
        CHECK(bk.bytes - aligned(bk.params.back()) < bucket_bytes);
      }
      CHECK(bk.ready_after == std::max(ready, most));
      ready = bk.ready_after;
      at += bk.bytes;
    }
    CHECK(l.bytes == at);
    // Every parameter once, in the order their gradients are final (ties: list order).
    std::vector<size_t> expect(params.size());
    for (size_t i = 0; i < expect.size(); ++i) expect[i] = i;
    std::stable_sort(expect.begin(), expect.end(), [&](size_t a, size_t b) { return final_after[a] < final_after[b]; });
    CHECK(seen == expect);

    // 0: one bucket in list order (the single all-reduce after the backward).
    const GradientLayout one = plan_gradient_buckets(params, final_after, 0, align);
    REQUIRE(one.buckets.size() == 1);
    for (size_t i = 0; i < params.size(); ++i) CHECK(one.buckets[0].params[i] == i);
    CHECK(one.bytes == l.bytes);
  }
}

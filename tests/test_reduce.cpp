// Reductions and histograms vs double CPU references (nn/ops/reduce.h).
// Tolerances: sums and means 1e-6 relative to sum|x| (resp. mean|x|) — the Kahan/tree design
// target; variances 1e-5 relative; max|x| and histogram counts exact.
#include <cmath>
#include <cstdlib>
#include <limits>

#include "backend/error.h"
#include "nn/ops/reduce.h"
#include "testutil.h"

using namespace vkqat;
using namespace vkqat::nn;

namespace {

enum class Stat { Sum, Mean, Var, VarUnbiased, MaxAbs };

// Runs one reduction on the device; returns the per-channel values.
std::vector<float> gpu_stat(Stat stat, const std::vector<float>& data, const std::vector<int>& shape,
                            ReduceScope scope) {
  Context& ctx = test::ctx();
  Tensor x(ctx, shape);
  x.upload(data);
  const int channels = int(reduce_channel_count(shape, scope));
  Tensor out(ctx, {channels});
  Tensor scratch = make_reduce_scratch(ctx, shape, scope);
  Recording rec(ctx);
  ReduceOptions opt;
  opt.scope = scope;
  opt.unbiased = stat == Stat::VarUnbiased;
  switch (stat) {
    case Stat::Sum: reduce_sum(rec, x, out, scratch, opt); break;
    case Stat::Mean: reduce_mean(rec, x, out, scratch, opt); break;
    case Stat::Var:
    case Stat::VarUnbiased: reduce_var(rec, x, out, scratch, opt); break;
    case Stat::MaxAbs: reduce_max_abs(rec, x, out, scratch, opt); break;
  }
  rec.finish();
  rec.run();
  return out.download();
}

// Per-channel scale of the inputs for the relative tolerance of sums: sum|x| (mean|x| for means).
std::vector<double> abs_scale(const std::vector<float>& data, const std::vector<int>& shape, ReduceScope scope,
                              bool mean) {
  std::vector<float> a(data.size());
  for (size_t i = 0; i < a.size(); ++i) a[i] = std::fabs(data[i]);
  return mean ? ref::reduce_mean(a, shape, scope) : ref::reduce_sum(a, shape, scope);
}

void check_all_stats(const std::vector<float>& data, const std::vector<int>& shape, ReduceScope scope,
                     const std::string& what) {
  INFO(what << " shape " << shape_str(shape));
  const auto sum_scale = abs_scale(data, shape, scope, false);
  const auto mean_scale = abs_scale(data, shape, scope, true);

  const auto sum = gpu_stat(Stat::Sum, data, shape, scope);
  const auto sum_ref = ref::reduce_sum(data, shape, scope);
  const auto mean = gpu_stat(Stat::Mean, data, shape, scope);
  const auto mean_ref = ref::reduce_mean(data, shape, scope);
  const auto var = gpu_stat(Stat::Var, data, shape, scope);
  const auto var_ref = ref::reduce_var(data, shape, scope, false);
  const auto uvar = gpu_stat(Stat::VarUnbiased, data, shape, scope);
  const auto uvar_ref = ref::reduce_var(data, shape, scope, true);
  const auto maxabs = gpu_stat(Stat::MaxAbs, data, shape, scope);
  const auto maxabs_ref = ref::reduce_max_abs(data, shape, scope);
  REQUIRE(sum.size() == sum_ref.size());

  int bad = 0;
  for (size_t c = 0; c < sum.size() && bad < 5; ++c) {
    auto near = [&](double got, double want, double tol, const char* name) {
      if (std::isnan(want) ? !std::isnan(got) : !(std::fabs(got - want) <= tol)) {
        ++bad;
        FAIL_CHECK(name << "[" << c << "] got " << got << " want " << want << " (tol " << tol << ")");
      }
    };
    near(sum[c], sum_ref[c], 1e-6 * sum_scale[c] + 1e-30, "sum");
    near(mean[c], mean_ref[c], 1e-6 * mean_scale[c] + 1e-30, "mean");
    near(var[c], var_ref[c], 1e-5 * var_ref[c] + 1e-12, "var");
    near(uvar[c], uvar_ref[c], 1e-5 * uvar_ref[c] + 1e-12, "unbiased var");
    near(maxabs[c], maxabs_ref[c], 0.0, "max_abs");
  }
}

}  // namespace

TEST_CASE("whole-tensor sum, mean, var, max_abs match double references" * doctest::test_suite("reduce")) {
  for (int n : {1, 2, 3, 4, 7, 1000, 65537, 1 << 20}) {
    check_all_stats(test::random_vector(size_t(n), 100 + n), {n}, ReduceScope::Tensor, "uniform [-1, 1]");
  }
  // Positive data (no cancellation in the sum) and an offset mean (catastrophic for E[x^2] - E[x]^2).
  check_all_stats(test::random_vector(1 << 20, 7, 0.f, 1.f), {1 << 20}, ReduceScope::Tensor, "uniform [0, 1]");
  check_all_stats(test::random_vector(65537, 8, 999.f, 1001.f), {65537}, ReduceScope::Tensor, "1000 +- 1");
  check_all_stats(test::random_vector(999, 9), {9, 111}, ReduceScope::Tensor, "rank 2");
}

TEST_CASE("per-row and per-channel reductions" * doctest::test_suite("reduce")) {
  const std::vector<std::vector<int>> shapes = {{1, 1, 1, 1}, {2, 3, 5, 5}, {4, 16, 8, 8}, {128, 3, 1, 1},
                                                {5, 7},       {16, 16, 3, 3}, {3, 1, 1, 1}};
  for (const auto& shape : shapes) {
    int64_t n = 1;
    for (int d : shape) n *= d;
    auto data = test::random_vector(size_t(n), uint32_t(n), -2.f, 3.f);
    check_all_stats(data, shape, ReduceScope::Rows, "rows");
    check_all_stats(data, shape, ReduceScope::Channels, "channels");
  }
  // Long channels and more output values than one dispatch's workgroup limit (65535).
  check_all_stats(test::random_vector(8 * 4 * 65 * 65, 11), {8, 4, 65, 65}, ReduceScope::Channels, "long channels");
  check_all_stats(test::random_vector(70000 * 3, 12), {70000, 3}, ReduceScope::Rows, "70000 rows");
}

TEST_CASE("reductions write at the requested indices and replay" * doctest::test_suite("reduce")) {
  Context& ctx = test::ctx();
  const std::vector<int> shape = {3, 4, 5, 6};
  auto data = test::random_vector(3 * 4 * 5 * 6, 21, -1.f, 2.f);
  Tensor x(ctx, shape);
  x.upload(data);
  Tensor stats(ctx, {16});
  stats.upload(std::vector<float>(16, -7.f));
  Tensor scratch = make_reduce_scratch(ctx, shape, ReduceScope::Channels);
  Recording rec(ctx);
  ReduceOptions opt;
  opt.scope = ReduceScope::Channels;
  opt.out_index = 2;
  opt.var_index = 8;
  reduce_mean_var(rec, x, stats, stats, scratch, opt);
  ReduceOptions whole;
  whole.out_index = 15;
  reduce_max_abs(rec, x, stats, scratch, whole);  // shares the scratch
  rec.finish();
  for (int replay = 0; replay < 2; ++replay) {
    rec.run();
    auto got = stats.download();
    auto mean = ref::reduce_mean(data, shape, ReduceScope::Channels);
    auto var = ref::reduce_var(data, shape, ReduceScope::Channels);
    for (int i : {0, 1, 6, 7, 12, 13, 14}) CHECK(got[i] == -7.f);
    for (int c = 0; c < 4; ++c) {
      CHECK(got[2 + c] == doctest::Approx(mean[c]).epsilon(1e-6));
      CHECK(got[8 + c] == doctest::Approx(var[c]).epsilon(1e-5));
    }
    CHECK(got[15] == float(ref::reduce_max_abs(data, shape)[0]));
    // New data, same recording.
    data = test::random_vector(data.size(), 22 + replay, -3.f, 1.f);
    x.upload(data);
  }
}

namespace {
// Sets VKQAT_HISTOGRAM (kernel variant) for the lifetime of the object.
struct HistogramVariant {
  explicit HistogramVariant(const char* v) {
    if (*v) setenv("VKQAT_HISTOGRAM", v, 1);
  }
  ~HistogramVariant() { unsetenv("VKQAT_HISTOGRAM"); }
};
// Device default, shared-memory atomics (the GPU path), private per-invocation columns (the
// CPU path). With 5000 bins neither table fits in lavapipe's shared memory: global atomics.
const char* const kHistogramVariants[] = {"", "atomic", "private"};
}  // namespace

TEST_CASE("histogram counts equal the CPU's exactly" * doctest::test_suite("reduce")) {
  Context& ctx = test::ctx();
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  for (const char* variant : kHistogramVariants) {
    HistogramVariant use(variant);
    for (int n : {1, 7, 1000, 65537, 1 << 20}) {
      for (int bins : {1, 10, 256, 1000, 5000}) {
        INFO("variant '" << variant << "' n " << n << " bins " << bins);
        auto data = test::random_vector(size_t(n), uint32_t(n + bins), -1.5f, 1.5f);
        for (size_t i = 3; i < data.size(); i += 97)
          data[i] = (i / 97) % 3 == 0 ? nan : (i / 97) % 3 == 1 ? inf : -inf;
        if (n > 2) data[1] = 1.f, data[2] = -1.f;  // exactly hi and lo
        Tensor x(ctx, {n});
        x.upload(data);
        Tensor counts(ctx, {bins + 2}, DType::U32);
        Recording rec(ctx);
        histogram(rec, x, counts, -1.f, 1.f);
        rec.finish();
        rec.run();
        rec.run();  // zeroed again on replay
        auto got = counts.download_u32();
        auto want = ref::histogram(data, bins, -1.f, 1.f);
        uint64_t total = 0;
        for (int b = 0; b < bins; ++b) total += got[b];
        int mismatches = 0;
        for (size_t i = 0; i < want.size(); ++i) mismatches += got[i] != want[i];
        CHECK_MESSAGE(mismatches == 0, mismatches << " slots differ; underflow " << got[bins] << " vs " << want[bins]
                                                  << ", overflow " << got[bins + 1] << " vs " << want[bins + 1]);
        size_t non_nan = 0;
        for (float v : data) non_nan += !std::isnan(v);
        CHECK(total == non_nan);
      }
    }
  }
}

TEST_CASE("histogram accumulates into existing counts" * doctest::test_suite("reduce")) {
  Context& ctx = test::ctx();
  for (const char* variant : kHistogramVariants) {
    HistogramVariant use(variant);
    auto data = test::random_vector(4099, 5, 0.f, 4.f);
    Tensor x(ctx, {4099});
    x.upload(data);
    Tensor counts(ctx, {6}, DType::U32);
    counts.upload_u32({1, 2, 3, 4, 5, 6});
    Recording rec(ctx);
    histogram(rec, x, counts, 0.5f, 3.5f, /*accumulate=*/true);
    rec.finish();
    rec.run();
    auto got = counts.download_u32();
    auto want = ref::histogram(data, 4, 0.5f, 3.5f);
    for (size_t i = 0; i < want.size(); ++i) CHECK(got[i] == want[i] + uint32_t(i + 1));
  }
}

TEST_CASE("reductions reject bad arguments" * doctest::test_suite("reduce")) {
  Context& ctx = test::ctx();
  Tensor x(ctx, {4, 8});
  Tensor xi(ctx, {4, 8}, DType::I32);
  Tensor out1(ctx, {1});
  Tensor out4(ctx, {4});
  Tensor scratch = make_reduce_scratch(ctx, {4, 8}, ReduceScope::Rows);
  Tensor tiny_scratch(ctx, {1});
  Tensor counts(ctx, {12}, DType::U32);
  Tensor counts_f(ctx, {12});
  Recording rec(ctx);
  ReduceOptions rows;
  rows.scope = ReduceScope::Rows;
  CHECK_THROWS_AS(reduce_sum(rec, xi, out1, scratch), Error);
  CHECK_THROWS_AS(reduce_sum(rec, x, out1, scratch, rows), Error);  // 4 rows, room for 1
  CHECK_THROWS_AS(reduce_sum(rec, x, xi, scratch), Error);
  ReduceOptions late;
  late.out_index = 1;
  CHECK_THROWS_AS(reduce_mean(rec, x, out1, scratch, late), Error);
  CHECK_THROWS_AS(reduce_var(rec, x, out4, tiny_scratch, rows), Error);
  ReduceOptions var_late = rows;
  var_late.var_index = 1;
  CHECK_THROWS_AS(reduce_mean_var(rec, x, out4, out4, scratch, var_late), Error);
  Tensor v1(ctx, {8});
  ReduceOptions channels;
  channels.scope = ReduceScope::Channels;
  CHECK_THROWS_AS(reduce_max_abs(rec, v1, out4, scratch, channels), Error);
  CHECK_THROWS_AS(histogram(rec, x, counts_f, 0.f, 1.f), Error);
  CHECK_THROWS_AS(histogram(rec, x, counts, 1.f, 1.f), Error);
  CHECK_THROWS_AS(histogram(rec, x, counts, 0.f, std::numeric_limits<float>::infinity()), Error);
  CHECK_THROWS_AS(histogram(rec, x, counts, -3e38f, 3e38f), Error);  // width overflows
  CHECK_THROWS_AS(histogram(rec, xi, counts, 0.f, 1.f), Error);
  Tensor counts2(ctx, {2}, DType::U32);
  CHECK_THROWS_AS(histogram(rec, x, counts2, 0.f, 1.f), Error);
  CHECK(rec.command_count() == 0);
}

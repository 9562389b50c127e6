// cross_entropy: GPU vs CPU reference (rtol 1e-4, atol 1e-6 for gradients), tie rule for
// the accuracy count, huge logits (stability), on-device epoch accumulation, finite
// differences of the reference gradient (in double), shape errors.
#include "backend/error.h"
#include "nn/ops/cross_entropy.h"
#include "testutil.h"

using namespace vkqat;
using namespace vkqat::nn;

namespace {
struct Batch {
  std::vector<float> logits;
  std::vector<uint32_t> labels;
};

// Random logits with a few awkward rows: a tie for the maximum, and huge values.
Batch make_batch(int n, int k, uint32_t seed) {
  Batch b{test::random_vector(size_t(n) * k, seed, -3.f, 3.f), {}};
  std::mt19937 rng(seed + 1);
  for (int r = 0; r < n; ++r) b.labels.push_back(uint32_t(rng() % uint32_t(k)));
  if (n > 2 && k > 2) {
    b.logits[size_t(1) * k + 0] = b.logits[size_t(1) * k + 2] = 5.f;  // tie: class 0 wins
    b.labels[1] = 2;                                                   // so row 1 is wrong
    for (int j = 0; j < k; ++j) b.logits[size_t(2) * k + j] += 1000.f;  // exp would overflow
  }
  return b;
}
}  // namespace

TEST_CASE("cross entropy matches the reference" * doctest::test_suite("cross_entropy")) {
  Context& ctx = test::ctx();
  struct Case { int n, k; float scale; DType label_type; };
  for (Case c : {Case{1, 3, 1.f, DType::U32}, Case{5, 10, 0.3f, DType::I32}, Case{128, 10, 1.f, DType::U32},
                 Case{300, 3, 2.f, DType::I32}}) {
    CAPTURE(c.n);
    CAPTURE(c.k);
    Batch b = make_batch(c.n, c.k, 90 + c.n);
    Tensor logits(ctx, {c.n, c.k}), labels(ctx, {c.n}, c.label_type), loss(ctx, {1}), correct(ctx, {1}, DType::U32),
        dlogits(ctx, {c.n, c.k}), loss_eval(ctx, {1}), correct_eval(ctx, {1}, DType::I32);
    logits.upload(b.logits);
    labels.upload_u32(b.labels);
    Recording rec(ctx);
    cross_entropy(rec, logits, labels, loss, correct, &dlogits, c.scale);
    cross_entropy(rec, logits, labels, loss_eval, correct_eval, nullptr);  // no gradient
    rec.run();
    std::vector<float> d_want;
    auto want = ref::cross_entropy(b.logits, b.labels, c.n, c.k, c.scale, d_want);
    test::check_close(loss.download(), {float(want.loss)}, 1e-4, 0, "loss");
    test::check_close(loss_eval.download(), {float(want.loss)}, 1e-4, 0, "loss without gradient");
    CHECK(correct.download_u32()[0] == want.correct);
    CHECK(correct_eval.download_u32()[0] == want.correct);
    test::check_close(dlogits.download(), d_want, 1e-4, 1e-6 * c.scale / c.n, "dlogits");
  }
}

TEST_CASE("cross entropy accumulates epoch totals on the device" * doctest::test_suite("cross_entropy")) {
  Context& ctx = test::ctx();
  const int n = 37, k = 10;
  Batch b = make_batch(n, k, 95);
  Tensor logits(ctx, {n, k}), labels(ctx, {n}, DType::U32), loss_sum(ctx, {1}), correct(ctx, {1}, DType::U32),
      dlogits(ctx, {n, k});
  logits.upload(b.logits);
  labels.upload_u32(b.labels);
  loss_sum.upload({1.5f});
  correct.upload_u32({7});
  Recording rec(ctx);
  cross_entropy(rec, logits, labels, loss_sum, correct, &dlogits, 1.f, true);
  for (int step = 0; step < 3; ++step) rec.run();  // three replays, as three training steps
  std::vector<float> d_want;
  auto want = ref::cross_entropy(b.logits, b.labels, n, k, 1.0, d_want);
  test::check_close(loss_sum.download(), {float(1.5 + 3 * want.loss * n)}, 1e-4, 0, "loss sum");
  CHECK(correct.download_u32()[0] == 7 + 3 * want.correct);
  test::check_close(dlogits.download(), d_want, 1e-4, 1e-6 / n, "dlogits");
}

TEST_CASE("cross entropy reference gradient equals finite differences" * doctest::test_suite("cross_entropy")) {
  const int n = 4, k = 5;
  const double scale = 0.7;
  Batch b = make_batch(n, k, 97);
  std::vector<double> z(b.logits.begin(), b.logits.end()), dz, unused;
  ref::cross_entropy(z, b.labels, n, k, scale, dz);
  for (size_t i = 0; i < z.size(); ++i) {
    double orig = z[i];
    z[i] = orig + 1e-6;
    double lp = ref::cross_entropy(z, b.labels, n, k, scale, unused).loss;
    z[i] = orig - 1e-6;
    double lm = ref::cross_entropy(z, b.labels, n, k, scale, unused).loss;
    z[i] = orig;
    CHECK(dz[i] == doctest::Approx(scale * (lp - lm) / 2e-6).epsilon(1e-6));
  }
}

TEST_CASE("cross entropy flags a label outside [0, classes) with a NaN loss" * doctest::test_suite("cross_entropy")) {
  Context& ctx = test::ctx();
  Tensor logits(ctx, {2, 3}), labels(ctx, {2}, DType::I32), loss(ctx, {1}), correct(ctx, {1}, DType::U32);
  logits.upload({0.f, 1.f, 2.f, 2.f, 1.f, 0.f});
  labels.upload_u32({2u, 3u});  // 3 is outside [0, 3)
  Recording rec(ctx);
  cross_entropy(rec, logits, labels, loss, correct, nullptr);
  rec.run();
  CHECK(std::isnan(loss.download()[0]));
  CHECK(correct.download_u32()[0] == 1);
}

TEST_CASE("cross entropy ignores padding rows labelled kIgnoreLabel" * doctest::test_suite("cross_entropy")) {
  Context& ctx = test::ctx();
  const int n = 5, k = 4;
  Batch b = make_batch(n, k, 11);
  b.labels[1] = b.labels[4] = kIgnoreLabel;
  Tensor logits(ctx, {n, k}), labels(ctx, {n}, DType::U32), loss(ctx, {1}), correct(ctx, {1}, DType::U32),
      dlogits(ctx, {n, k});
  logits.upload(b.logits);
  labels.upload_u32(b.labels);
  Recording rec(ctx);
  rec.fill(loss.view(), 0);
  rec.fill(correct.view(), 0);
  cross_entropy(rec, logits, labels, loss, correct, &dlogits, 1.f, /*accumulate=*/true);
  rec.run();
  std::vector<float> ref_grad;
  auto ref = ref::cross_entropy(b.logits, b.labels, n, k, 1.0, ref_grad);
  // Sum over the 3 real rows only; the reference divides by n for its mean.
  CHECK(loss.download()[0] == doctest::Approx(ref.loss * n).epsilon(1e-4));  // row 2 has logits near 1000
  CHECK(correct.download_u32()[0] == ref.correct);
  auto g = dlogits.download();
  for (int j = 0; j < k; ++j) CHECK(g[size_t(1) * k + j] == 0.f);
  test::check_close(g, ref_grad, 1e-4, 1e-6, "dlogits with ignored rows");
  // Removing the ignored rows gives the same sum.
  std::vector<float> kept;
  std::vector<uint32_t> kept_labels;
  for (int r : {0, 2, 3}) {
    kept.insert(kept.end(), b.logits.begin() + r * k, b.logits.begin() + (r + 1) * k);
    kept_labels.push_back(b.labels[r]);
  }
  std::vector<float> unused;
  auto ref3 = ref::cross_entropy(kept, kept_labels, 3, k, 1.0, unused);
  CHECK(ref.loss * n == doctest::Approx(ref3.loss * 3).epsilon(1e-12));
}

TEST_CASE("cross entropy rejects bad shapes" * doctest::test_suite("cross_entropy")) {
  Context& ctx = test::ctx();
  Tensor logits(ctx, {4, 10}), labels(ctx, {4}, DType::U32), labels_f(ctx, {4}), labels_short(ctx, {3}, DType::U32),
      loss(ctx, {1}), loss2(ctx, {2}), correct(ctx, {1}, DType::U32), correct_f(ctx, {1}), d(ctx, {4, 10}),
      d_bad(ctx, {10, 4}), flat(ctx, {40});
  Recording rec(ctx);
  CHECK_THROWS_AS(cross_entropy(rec, flat, labels, loss, correct, nullptr), Error);
  CHECK_THROWS_AS(cross_entropy(rec, logits, labels_f, loss, correct, nullptr), Error);
  CHECK_THROWS_AS(cross_entropy(rec, logits, labels_short, loss, correct, nullptr), Error);
  CHECK_THROWS_AS(cross_entropy(rec, logits, labels, loss2, correct, nullptr), Error);
  CHECK_THROWS_AS(cross_entropy(rec, logits, labels, loss, correct_f, nullptr), Error);
  CHECK_THROWS_AS(cross_entropy(rec, logits, labels, loss, correct, &d_bad), Error);
  cross_entropy(rec, logits, labels, loss, correct, &d);  // fine
}

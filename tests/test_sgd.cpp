// SGD update vs the CPU reference of torch.optim.SGD's formula (nn/ops/sgd.h).
// Tolerance: 1e-5 relative + 1e-6 absolute after several steps (float vs double rounding).
#include "backend/error.h"
#include "nn/ops/sgd.h"
#include "testutil.h"

using namespace vkqat;
using namespace vkqat::nn;

namespace {

// Replays one recording `steps` times with a new gradient and learning rate each time and
// compares weights and momentum buffers with the reference after every step.
void check_steps(int n, const SgdOptions& opt, int steps) {
  INFO("n " << n << " momentum " << opt.momentum << " wd " << opt.weight_decay << " nesterov " << opt.nesterov);
  Context& ctx = test::ctx();
  Tensor w(ctx, {n}), grad(ctx, {n}), buf(ctx, {n});
  Tensor step_params(ctx, {4});
  std::vector<float> w_ref = test::random_vector(size_t(n), uint32_t(n) + 1);
  std::vector<float> buf_ref(size_t(n), 0.f);
  w.upload(w_ref);
  buf.zero();
  Recording rec(ctx);
  sgd_update(rec, w, grad, buf, step_params, /*lr_index=*/2, opt);
  rec.finish();
  for (int step = 0; step < steps; ++step) {
    const float lr = 0.1f / float(step + 1);
    auto g = test::random_vector(size_t(n), uint32_t(1000 * step + n), -0.5f, 0.5f);
    grad.upload(g);
    step_params.upload({-1.f, 7.f, lr, 3.f});  // lr must come from index 2 only
    rec.run();
    ref::sgd_update(w_ref, g, buf_ref, lr, opt);
    test::check_close(w.download(), w_ref, 1e-5, 1e-6, "weights after step " + std::to_string(step));
    test::check_close(buf.download(), buf_ref, 1e-5, 1e-6, "momentum after step " + std::to_string(step));
  }
}

}  // namespace

TEST_CASE("sgd matches PyTorch's formula over several replayed steps" * doctest::test_suite("sgd")) {
  for (int n : {1, 7, 12, 1000, 65537}) {  // sizes divisible by 4 take the vec4 kernel
    for (bool nesterov : {false, true}) {
      for (float wd : {0.f, 5e-4f, 0.1f}) {
        SgdOptions opt;
        opt.momentum = 0.9f;
        opt.weight_decay = wd;
        opt.nesterov = nesterov;
        check_steps(n, opt, 4);
      }
    }
  }
  SgdOptions plain;
  plain.momentum = 0.f;
  plain.weight_decay = 1e-2f;
  check_steps(1000, plain, 3);
}

TEST_CASE("sgd hand-computed first steps" * doctest::test_suite("sgd")) {
  Context& ctx = test::ctx();
  Tensor w(ctx, {2}), grad(ctx, {2}), buf(ctx, {2}), step_params(ctx, {1});
  w.upload({1.f, -2.f});
  grad.upload({0.5f, 1.f});
  buf.zero();
  SgdOptions opt;
  opt.momentum = 0.5f;
  opt.weight_decay = 0.1f;
  opt.nesterov = true;
  Recording rec(ctx);
  sgd_update(rec, w, grad, buf, step_params, 0, opt);
  rec.finish();
  step_params.upload({0.1f});
  rec.run();
  // g = 0.5 + 0.1*1 = 0.6; buf = g = 0.6; d = g + 0.5*buf = 0.9; w = 1 - 0.09 = 0.91
  // g = 1 - 0.2 = 0.8; buf = 0.8; d = 1.2; w = -2 - 0.12 = -2.12
  auto w1 = w.download();
  CHECK(w1[0] == doctest::Approx(0.91).epsilon(1e-6));
  CHECK(w1[1] == doctest::Approx(-2.12).epsilon(1e-6));
  // lr = 0 on replay: weights stay, momentum still advances (buf = 0.5*0.6 + 0.691).
  step_params.upload({0.f});
  rec.run();
  CHECK(w.download() == w1);
  CHECK(buf.download()[0] == doctest::Approx(0.5 * 0.6 + 0.5 + 0.1 * 0.91).epsilon(1e-6));
}

TEST_CASE("sgd on a tensor larger than one dispatch's workgroup count" * doctest::test_suite("sgd")) {
  check_steps(65535 * 64 + 5, SgdOptions{}, 1);        // scalar kernel, 65536 workgroups of 64
  check_steps((65535 * 64 + 1) * 4, SgdOptions{}, 1);  // vec4 kernel, 65536 workgroups of 64
}

TEST_CASE("sgd rejects bad arguments" * doctest::test_suite("sgd")) {
  Context& ctx = test::ctx();
  Tensor w(ctx, {4, 3}), grad(ctx, {12}), buf(ctx, {4, 3}), short_grad(ctx, {11});
  Tensor step_params(ctx, {2}), int_params(ctx, {2}, DType::U32), int_grad(ctx, {12}, DType::I32);
  Recording rec(ctx);
  SgdOptions opt;
  CHECK_NOTHROW(sgd_update(rec, w, grad, buf, step_params, 1, opt));  // same count, other shape: fine
  CHECK_THROWS_AS(sgd_update(rec, w, short_grad, buf, step_params, 0, opt), Error);
  CHECK_THROWS_AS(sgd_update(rec, w, int_grad, buf, step_params, 0, opt), Error);
  CHECK_THROWS_AS(sgd_update(rec, w, grad, short_grad, step_params, 0, opt), Error);
  CHECK_THROWS_AS(sgd_update(rec, w, grad, buf, step_params, 2, opt), Error);
  CHECK_THROWS_AS(sgd_update(rec, w, grad, buf, int_params, 0, opt), Error);
  Tensor none;
  CHECK_THROWS_AS(sgd_update(rec, w, grad, none, step_params, 0, opt), Error);
  SgdOptions bad = opt;
  bad.momentum = 0.f;
  bad.nesterov = true;
  CHECK_THROWS_AS(sgd_update(rec, w, grad, buf, step_params, 0, bad), Error);
  bad = opt;
  bad.weight_decay = -1.f;
  CHECK_THROWS_AS(sgd_update(rec, w, grad, buf, step_params, 0, bad), Error);
  rec.finish();
}

namespace {

// Parameters of awkward sizes (one element, odd counts, around the 512-float chunk of the
// multi-tensor kernel), half of them with weight decay: each trained `steps` times by
// sgd_update_multi and by one sgd_update per tensor, which must agree bit for bit.
// Returns the multi-tensor dispatch count.
int check_multi_matches_per_tensor(float momentum, bool nesterov, uint64_t max_span_bytes, int steps) {
  Context& ctx = test::ctx();
  const std::vector<int> sizes = {1, 3, 7, 12, 511, 512, 513, 1000, 4099, 2, 65537};
  struct Param {
    Tensor w, grad, buf;
    float wd;
  };
  std::vector<Param> multi, single;
  for (std::vector<Param>* set : {&multi, &single})
    for (size_t i = 0; i < sizes.size(); ++i) {
      const int n = sizes[i];
      Param p{Tensor(ctx, {n}), Tensor(ctx, {n}), Tensor(ctx, {n}), i % 2 ? 5e-4f : 0.f};
      p.w.upload(test::random_vector(size_t(n), uint32_t(17 + i)));
      p.buf.zero();
      set->push_back(std::move(p));
    }
  Tensor step_params(ctx, {3});
  Recording rec_multi(ctx), rec_single(ctx);
  std::vector<SgdTensor> table;
  for (Param& p : multi) table.push_back({&p.w, &p.grad, &p.buf, p.wd});
  const int dispatches = sgd_update_multi(rec_multi, table, step_params, 1, momentum, nesterov, max_span_bytes);
  for (Param& p : single) {
    SgdOptions o;
    o.momentum = momentum, o.nesterov = nesterov, o.weight_decay = p.wd;
    sgd_update(rec_single, p.w, p.grad, p.buf, step_params, 1, o);
  }
  rec_multi.finish(), rec_single.finish();
  for (int step = 0; step < steps; ++step) {
    for (size_t i = 0; i < sizes.size(); ++i) {
      auto g = test::random_vector(size_t(sizes[i]), uint32_t(100 * step + i), -0.5f, 0.5f);
      multi[i].grad.upload(g), single[i].grad.upload(g);
    }
    step_params.upload({9.f, 0.05f / float(step + 1), -3.f});
    rec_multi.run(), rec_single.run();
    for (size_t i = 0; i < sizes.size(); ++i) {
      INFO("tensor of " << sizes[i] << " step " << step << " momentum " << momentum << " nesterov " << nesterov);
      CHECK(multi[i].w.download() == single[i].w.download());
      CHECK(multi[i].buf.download() == single[i].buf.download());
      CHECK(multi[i].w.download() != std::vector<float>(size_t(sizes[i]), 0.f));
    }
  }
  return dispatches;
}

}  // namespace

TEST_CASE("multi-tensor sgd is bit-identical to one sgd dispatch per tensor" * doctest::test_suite("sgd")) {
  for (bool nesterov : {false, true}) CHECK(check_multi_matches_per_tensor(0.9f, nesterov, 0, 3) >= 1);
  check_multi_matches_per_tensor(0.f, false, 0, 2);
}

TEST_CASE("multi-tensor sgd splits groups at the storage buffer range" * doctest::test_suite("sgd")) {
  // As on a device with a small maxStorageBufferRange: a 64 KiB limit cannot hold the
  // 65537-float tensor (refused with an error), 300 KiB holds it but not every tensor's
  // span (the weights, gradients and momenta are interleaved in memory): several dispatches.
  CHECK_THROWS_AS(check_multi_matches_per_tensor(0.9f, false, 64 << 10, 1), Error);
  const int split = check_multi_matches_per_tensor(0.9f, true, 300 << 10, 2);
  CHECK(split >= 2);
}

TEST_CASE("multi-tensor sgd rejects bad arguments" * doctest::test_suite("sgd")) {
  Context& ctx = test::ctx();
  Tensor w(ctx, {5}), grad(ctx, {5}), buf(ctx, {5}), short_grad(ctx, {4}), step_params(ctx, {1});
  Recording rec(ctx);
  CHECK_THROWS_AS(sgd_update_multi(rec, {{&w, &short_grad, &buf, 0.f}}, step_params, 0, 0.9f, false), Error);
  CHECK_THROWS_AS(sgd_update_multi(rec, {{&w, &grad, &buf, -1.f}}, step_params, 0, 0.9f, false), Error);
  CHECK_THROWS_AS(sgd_update_multi(rec, {{&w, &grad, &buf, 0.f}}, step_params, 1, 0.9f, false), Error);
  CHECK_THROWS_AS(sgd_update_multi(rec, {{&w, &grad, &buf, 0.f}}, step_params, 0, 0.f, true), Error);
  CHECK_THROWS_AS(sgd_update_multi(rec, {{&w, nullptr, &buf, 0.f}}, step_params, 0, 0.9f, false), Error);
  CHECK(sgd_update_multi(rec, {}, step_params, 0, 0.9f, false) == 0);
  rec.finish();
}

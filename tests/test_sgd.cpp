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

// Device limits and the VKQAT_DEVICE_PROFILE switch: the profiles clamp what the backend
// sees, workgroup sizes follow the limits, a kernel over the storage-buffer limit is
// refused with the limit's name (and the batch-norm op falls back to its unfused kernels),
// subgroup sizes are requested or not relied on, and a forced conv variant still needs
// what its shaders use. Contexts with a profile are created here next to the shared one
// (validation on, every message fails the test).
#include <cstring>

#include "backend/error.h"
#include "backend/kernel.h"
#include "backend/recording.h"
#include "bn_kernel_configs.h"
#include "nn/ops/batchnorm2d.h"
#include "nn/ops/conv2d.h"
#include "testutil.h"

using namespace vkqat;

namespace {
std::unique_ptr<Context> profiled_context(const char* profile) {
  test::ScopedEnv env("VKQAT_DEVICE_PROFILE", profile);
  ContextOptions opt;
  opt.validation = true;
  opt.on_validation_message = [](const std::string& msg) { FAIL_CHECK("Vulkan validation message: " << msg); };
  return std::make_unique<Context>(opt);
}
}  // namespace

TEST_CASE("device profiles clamp limits and features" * doctest::test_suite("limits")) {
  DeviceInfo d = test::ctx().info();
  // Pretend a large desktop GPU, then clamp it.
  d.max_workgroup_invocations = 1024;
  d.max_workgroup_size = {1024, 1024, 64};
  d.max_shared_memory = 48 << 10;
  d.max_storage_buffer_range = 4ull << 30;
  d.max_storage_buffers_per_stage = 1u << 20;
  d.subgroup_size_control = d.shader_int64 = d.shader_int16 = d.shader_int8 = true;
  d.storage_buffer_16bit = d.storage_buffer_8bit = d.subgroup_shuffle = true;
  d.min_storage_offset_alignment = 16;
  d.profile.clear();
  DeviceInfo mobile = d, minimum = d;
  apply_device_profile(mobile, "mobile");
  CHECK(mobile.profile == "mobile");
  CHECK(mobile.max_workgroup_invocations == 128);
  CHECK(mobile.max_workgroup_size[0] == 128);
  CHECK(mobile.max_shared_memory == 16384);
  CHECK(mobile.max_storage_buffer_range == (1ull << 27));
  CHECK(mobile.max_storage_buffers_per_stage == 12);
  CHECK_FALSE(mobile.subgroup_size_control);
  CHECK_FALSE(mobile.shader_int64);
  CHECK_FALSE(mobile.shader_int16);
  CHECK_FALSE(mobile.shader_int8);
  CHECK_FALSE(mobile.storage_buffer_16bit);
  CHECK_FALSE(mobile.storage_buffer_8bit);
  CHECK(mobile.subgroup_shuffle);  // Android's baseline keeps subgroup operations
  apply_device_profile(minimum, "vulkan-min");
  CHECK(minimum.max_storage_buffers_per_stage == 4);
  CHECK(minimum.max_workgroup_invocations == 128);
  CHECK(minimum.min_storage_offset_alignment == 256);
  CHECK_FALSE(minimum.subgroup_shuffle);
  CHECK_FALSE(minimum.integer_dot_product);
  // A limit already below the profile's stays.
  DeviceInfo small = d;
  small.max_shared_memory = 8192;
  apply_device_profile(small, "mobile");
  CHECK(small.max_shared_memory == 8192);
  CHECK_THROWS_WITH_AS(apply_device_profile(d, "tablet"), doctest::Contains("expected mobile, vulkan-min"), Error);
  test::ScopedEnv env("VKQAT_DEVICE_PROFILE", "phone");
  CHECK_THROWS_WITH_AS(device_profile_from_env(), doctest::Contains("VKQAT_DEVICE_PROFILE=phone"), Error);
}

TEST_CASE("workgroup sizes follow invocation and shared-memory limits" * doctest::test_suite("limits")) {
  DeviceInfo d = test::ctx().info();
  d.max_workgroup_invocations = 1024;
  d.max_workgroup_size = {1024, 1024, 64};
  d.max_shared_memory = 32768;
  CHECK(pick_workgroup_size(d, 256) == 256);
  CHECK(pick_workgroup_size(d, 200) == 128);  // a power of two (tree reductions)
  CHECK(pick_workgroup_size(d, 256, 16) == 256);
  CHECK(pick_workgroup_size(d, 4096, 16) == 1024);
  d.max_shared_memory = 16384;
  CHECK(pick_workgroup_size(d, 4096, 16) == 1024);
  CHECK(pick_workgroup_size(d, 4096, 32) == 512);
  CHECK(pick_workgroup_size(d, 4096, 32, 8192) == 256);
  d.max_workgroup_invocations = 128;
  CHECK(pick_workgroup_size(d, 256, 16) == 128);
  d.max_workgroup_size[0] = 64;
  CHECK(pick_workgroup_size(d, 256) == 64);
  CHECK(pick_workgroup_size(d, 0) == 1);
}

TEST_CASE("vulkan-min: kernels over the limits say which limit they lack" * doctest::test_suite("limits")) {
  auto ctx = profiled_context("vulkan-min");
  CHECK(ctx->info().profile == "vulkan-min");
  CHECK(ctx->info().max_storage_buffers_per_stage == 4);
  // 8 storage buffers: refused with the limit and the profile named.
  CHECK_THROWS_WITH_AS(ctx->kernel("batchnorm2d_train", {64, 1, 1}),
                       doctest::Contains("maxPerStageDescriptorStorageBuffers 4 (VKQAT_DEVICE_PROFILE=vulkan-min)"),
                       Error);
  CHECK_THROWS_WITH_AS(ctx->kernel("backend_selftest_axpb", {256, 1, 1}), doctest::Contains("device limit 128"), Error);
  // Three buffers: fine.
  CHECK_NOTHROW(ctx->kernel("backend_selftest_axpb", {128, 1, 1}));
  // A forced register-blocked convolution needs subgroup shuffles, which vulkan-min lacks.
  test::ScopedEnv variant("VKQAT_CONV_VARIANT", "regblock");
  CHECK_THROWS_WITH_AS(nn::conv_variant(*ctx), doctest::Contains("needs subgroup shuffles"), Error);
}

TEST_CASE("subgroup sizes are requested, or kernels do not rely on them" * doctest::test_suite("limits")) {
  Context& ctx = test::ctx();
  const uint32_t sg = ctx.info().subgroup_size;
  if (ctx.info().subgroup_size_control) {
    const Kernel& k = ctx.kernel("backend_selftest_axpb", {64, 1, 1}, {}, sg);
    CHECK(k.required_subgroup_size() == sg);
    CHECK_THROWS_WITH_AS(ctx.kernel("backend_selftest_axpb", {64, 1, 1}, {}, 3), doctest::Contains("subgroup size 3"),
                         Error);
  }
  auto mobile = profiled_context("mobile");
  CHECK_FALSE(mobile->info().subgroup_size_control);
  CHECK_THROWS_WITH_AS(mobile->kernel("backend_selftest_axpb", {64, 1, 1}, {}, sg),
                       doctest::Contains("no subgroup size control"), Error);
  // Without size control the register-blocked convolution runs without lane sharing: the
  // result still matches the CPU reference (the sharing path is tested on the shared
  // context, which has size control on lavapipe).
  nn::Conv2dShape s{2, 8, 6, 6, 16, 3, 3, 1, 1};
  auto x = test::random_vector(size_t(s.n) * s.c_in * s.h * s.w, 1);
  auto w = test::random_vector(size_t(s.c_out) * s.c_in * 9, 2);
  nn::Tensor tx(*mobile, s.x_shape()), tw(*mobile, s.w_shape()), ty(*mobile, s.y_shape());
  tx.upload(x);
  tw.upload(w);
  Recording rec(*mobile);
  nn::conv2d_forward(rec, s, tx, tw, ty);
  rec.run();
  test::check_close(ty.download(), nn::ref::conv2d_forward(s, x, w), 1e-4, 1e-5, "conv forward (mobile)");
}

TEST_CASE("buffers beyond maxStorageBufferRange are refused with the limit named" * doctest::test_suite("limits")) {
  auto mobile = profiled_context("mobile");
  const uint64_t range = mobile->info().max_storage_buffer_range;
  REQUIRE(range == (1ull << 27));
  const Kernel& k = mobile->kernel("backend_selftest_axpb", {64, 1, 1});
  Buffer big = mobile->alloc(range + 256), small = mobile->alloc(256);
  Recording rec(*mobile);
  struct {
    uint32_t n;
    float a, b;
  } push{64, 1.f, 0.f};
  CHECK_THROWS_WITH_AS(rec.dispatch(k, {big.view(), small.view(), small.view()}, push, Groups{1}),
                       doctest::Contains("exceeds the device's maxStorageBufferRange 134217728"), Error);
  CHECK_NOTHROW(rec.dispatch(k, {big.view().sub(0, range), small.view(), small.view().sub(0, 128)}, push, Groups{1}));
}

TEST_CASE("mobile: the 13-buffer fused BN backward is not chosen, its unfused pair matches a CPU reference" *
          doctest::test_suite("limits")) {
  // batchnorm2d_bwd_quant_grad_out binds 13 storage buffers; with 12 per stage the op runs
  // batchnorm2d_bwd_quant and then batchnorm2d_quant_grad_out. grad_out is checked against
  // g = dq [0 <= y < clip] + extra computed here (the same float ops: bit for bit), and the
  // other outputs against the fused kernel on the shared context (bit for bit too).
  // One workgroup per channel, the path with the 13-buffer kernel (a GPU's Auto may split:
  // the split path binds at most 11, test_quant_pact covers it under mobile).
  test::ScopedBnReduction single(nn::BnReduction::Single);
  auto mobile = profiled_context("mobile");
  Context& native = test::ctx();
  // Under VKQAT_DEVICE_PROFILE=mobile the shared context has 12 too: then only the CPU check.
  const bool native_fuses = native.info().max_storage_buffers_per_stage >= 13;
  for (std::vector<int> shape : {std::vector<int>{2, 3, 5, 3}, {4, 5, 4, 4}}) {
    for (bool with_extra : {false, true}) {
      CAPTURE(nn::shape_str(shape));
      CAPTURE(with_extra);
      const int c = shape[1];
      const size_t n = size_t(shape[0]) * c * shape[2] * shape[3];
      const float alpha = 0.9f, levels = 15.f;
      const auto x_v = test::random_vector(n, 70, -2.f, 3.f), y_v = test::random_vector(n, 71, -0.5f, 1.5f);
      const auto dq_v = test::random_vector(n, 72), extra_v = test::random_vector(n, 73);
      const auto gamma_v = test::random_vector(size_t(c), 74, 0.5f, 1.5f), mean_v = test::random_vector(size_t(c), 75);
      const auto invstd_v = test::random_vector(size_t(c), 76, 0.5f, 2.f);
      struct Out {
        std::vector<float> dx, dgamma, dbeta, partials, grad;
        size_t commands;
      };
      auto run = [&](Context& ctx) {
        nn::Tensor x(ctx, shape), y(ctx, shape), dq(ctx, shape), dx(ctx, shape), grad(ctx, shape), clip(ctx, {1});
        std::vector<nn::Tensor> ch;  // gamma, mean, invstd, dgamma, dbeta, partials
        for (int i = 0; i < 6; ++i) ch.emplace_back(ctx, std::vector<int>{c});
        x.upload(x_v);
        y.upload(y_v);
        dq.upload(dq_v);
        grad.upload(extra_v);  // in place over extra, as a residual block does
        clip.upload({alpha});
        ch[0].upload(gamma_v);
        ch[1].upload(mean_v);
        ch[2].upload(invstd_v);
        nn::BnQuantBackward q{&clip, levels, 1.f / levels, true, with_extra ? &grad : nullptr, &ch[5]};
        Recording rec(ctx);
        nn::batchnorm2d_backward(rec, x, y, dq, ch[0], ch[1], ch[2], dx, false, ch[3], ch[4], false, false, &q, &grad);
        rec.run();
        return Out{dx.download(), ch[3].download(), ch[4].download(), ch[5].download(), grad.download(),
                   rec.command_count()};
      };
      const Out m = run(*mobile);
      CHECK(m.commands == 2);  // batchnorm2d_bwd_quant + batchnorm2d_quant_grad_out
      std::vector<float> want(n);
      for (size_t i = 0; i < n; ++i) {
        const float g = y_v[i] >= 0.f && y_v[i] < alpha ? dq_v[i] : 0.f;
        want[i] = with_extra ? g + extra_v[i] : g;
      }
      CHECK(m.grad == want);
      if (!native_fuses) continue;
      const Out f = run(native);
      CHECK(f.commands == 1);  // the fused kernel
      CHECK(f.grad == want);
      CHECK(m.dx == f.dx);
      CHECK(m.dgamma == f.dgamma);
      CHECK(m.dbeta == f.dbeta);
      CHECK(m.partials == f.partials);
    }
  }
}

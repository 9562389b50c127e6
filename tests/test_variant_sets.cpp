// One whole training step with the kernel set a CPU driver gets (register-blocked conv,
// contiguous BN walk) against the set a GPU gets (tiled conv, interleaved BN walk), and
// with one BN workgroup per channel against BN's two-level (split) reductions forced, in
// FP32 and W4A4 CG-PACT + SAT + aux: the same logged loss and the same weights after the
// step, within float summation-order differences (stated per test below).
#include <filesystem>
#include <fstream>
#include <unistd.h>

#include "nn/ops/batchnorm2d.h"
#include "nn/ops/conv2d.h"
#include "nn/safetensors.h"
#include "nn/train/trainer.h"
#include "quant/policy.h"
#include "testutil.h"

using namespace vkqat;
namespace fs = std::filesystem;

namespace {
bool have_fashion_mnist() { return fs::exists("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"); }

nn::TrainConfig one_step_config(const fs::path& out, bool w4a4) {
  nn::TrainConfig c;
  c.model.name = "resnet20";
  c.model.width = 8;  // 8 / 16 / 32 channels: every conv and BN kernel family of the step
  c.epochs = 1;
  c.batch = 32;
  c.lr = 0.1f;
  c.train_limit = 32;  // one step
  c.test_limit = 32;
  c.log_every = 1;
  c.out = out.string();
  if (w4a4) quant::use_cgpact_sat_aux(c);
  return c;
}

struct StepResult {
  nn::SafeTensors before, after;
  double loss = 0;
};

StepResult one_step(bool w4a4, nn::ConvVariant conv, const char* bn_walk, const std::string& tag,
                    nn::BnReduction bn_reduction = nn::BnReduction::Auto) {
  test::ScopedEnv walk("VKQAT_BN_WALK", bn_walk);
  nn::set_conv_variant(conv);
  nn::set_bn_reduction(bn_reduction);
  const fs::path dir = fs::temp_directory_path() / ("vkqat-variants-" + tag + "-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);  // save_checkpoint() before run() needs the run directory
  StepResult r;
  {
    nn::Trainer tr(test::ctx(), one_step_config(dir, w4a4), quant::quant_plugins());
    tr.save_checkpoint();
    r.before = nn::read_safetensors((dir / "checkpoint.safetensors").string());
    tr.run();
  }
  nn::set_conv_variant(nn::ConvVariant::Auto);
  nn::set_bn_reduction(nn::BnReduction::Auto);
  r.after = nn::read_safetensors((dir / "checkpoint.safetensors").string());
  std::ifstream in(dir / "metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line);
    if (j["type"] == "step") r.loss = j["loss"];
  }
  fs::remove_all(dir);
  return r;
}

// For every F32 tensor: max |cpu - gpu| <= rel * max |cpu - before| + abs_floor, i.e. the
// two sets' updates agree to `rel` of the step's own size.
void compare_steps(const StepResult& cpu, const StepResult& gpu, double rel, double abs_floor) {
  CHECK(cpu.loss > 0);
  CHECK(std::fabs(cpu.loss - gpu.loss) <= 1e-4 * std::fabs(cpu.loss));
  size_t compared = 0, moved = 0;
  double worst = 0;
  std::string worst_name;
  for (const auto& [name, t] : cpu.after.tensors) {
    if (t.dtype != "F32") continue;
    const auto a = cpu.after.get_f32(name), b = gpu.after.get_f32(name);
    REQUIRE(a.size() == b.size());
    std::vector<float> init = cpu.before.has(name) ? cpu.before.get_f32(name) : a;
    double step = 0, diff = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      step = std::max(step, std::fabs(double(a[i]) - init[i]));
      diff = std::max(diff, std::fabs(double(a[i]) - b[i]));
    }
    CHECK_MESSAGE(diff <= rel * step + abs_floor,
                  name << ": the two kernel sets differ by " << diff << " after a step of " << step);
    ++compared;
    moved += step > 0;
    if (step > 1e-4 && diff / step > worst) worst = diff / step, worst_name = name;
  }
  MESSAGE("loss " << cpu.loss << " vs " << gpu.loss << "; largest difference / update (updates > 1e-4): " << worst << " (" << worst_name
                  << ")");
  CHECK(compared > 20);
  CHECK(moved > 20);  // the step changed the weights: the comparison is not of untouched tensors
}
}  // namespace

TEST_CASE("one FP32 training step: CPU-driver kernel set == GPU kernel set" * doctest::test_suite("variant-sets")) {
  REQUIRE_MESSAGE(have_fashion_mnist(), "Debian package dataset-fashion-mnist is required (make test installs it)");
  if (!test::ctx().info().subgroup_shuffle) return;  // no register-blocked set on this device
  const auto cpu = one_step(false, nn::ConvVariant::RegisterBlocked, "contiguous", "fp32-cpu");
  const auto gpu = one_step(false, nn::ConvVariant::Tiled, "interleaved", "fp32-gpu");
  // Float sums in other orders: 1e-3 of the update (the step itself is lr * grad).
  compare_steps(cpu, gpu, 1e-3, 1e-6);
}

TEST_CASE("one W4A4 CG-PACT + SAT + aux training step: CPU-driver kernel set == GPU kernel set" *
          doctest::test_suite("variant-sets")) {
  REQUIRE_MESSAGE(have_fashion_mnist(), "Debian package dataset-fashion-mnist is required (make test installs it)");
  if (!test::ctx().info().subgroup_shuffle) return;
  const auto cpu = one_step(true, nn::ConvVariant::RegisterBlocked, "contiguous", "w4a4-cpu");
  const auto gpu = one_step(true, nn::ConvVariant::Tiled, "interleaved", "w4a4-gpu");
  // A pre-activation that lands within rounding of a quantizer level may take the other
  // code in one set: a few gradients then differ by a level's share, hence 2% of the update.
  compare_steps(cpu, gpu, 2e-2, 1e-6);
}

TEST_CASE("one training step, FP32 and W4A4 CG-PACT + SAT + aux: split BN reductions == one workgroup per channel" *
          doctest::test_suite("variant-sets")) {
  REQUIRE_MESSAGE(have_fashion_mnist(), "Debian package dataset-fashion-mnist is required (make test installs it)");
  const auto conv = nn::ConvVariant::Auto;
  const char* walk = test::ctx().info().is_cpu() ? "contiguous" : "interleaved";
  for (bool w4a4 : {false, true}) {
    CAPTURE(w4a4);
    const auto single = one_step(w4a4, conv, walk, w4a4 ? "w4a4-bn-single" : "fp32-bn-single", nn::BnReduction::Single);
    const auto split = one_step(w4a4, conv, walk, w4a4 ? "w4a4-bn-split" : "fp32-bn-split", nn::BnReduction::Split);
    // Only batch norm's sums change order (per chunk, then across chunks): mean and inv_std
    // move by an ulp, so a pre-activation within an ulp of the ReLU's 0 (FP32) or of a
    // quantizer level (W4A4) may take the other side. Measured: one such element in FP32
    // moved ResNet-20's layer1.1.bn1.bias by 0.65% of its update (and what lies before it
    // in the backward by less); everything after it agreed to 7e-5, as the walks do. Hence
    // 2% as for the kernel sets above; each op is checked against its CPU twin to 1e-4.
    compare_steps(single, split, 2e-2, 1e-6);
  }
}


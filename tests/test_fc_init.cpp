// --fc-init sat: the last FC's latent weight rescaled to n_out Var[W] = 1 before training.
// Under SAT the logits do not depend on that scale, but the first step's change of the
// effective weight W* goes as 1 / (n_out Var[W]) (README, "The papers' networks": 384x lr for
// MobileNetV2's 1280 features and 10 classes). Checked on a small ResNet with fp32 + SAT, the
// case where the invariance is exact (DoReFa's tanh bends it slightly).
#include <cmath>
#include <filesystem>

#include "backend/error.h"
#include "nn/model/network.h"
#include "nn/train/trainer.h"
#include "quant/policy.h"
#include "quant/sat.h"
#include "testutil.h"

using namespace vkqat;
namespace fs = std::filesystem;

namespace {
nn::TrainConfig one_step_config(const fs::path& out, const std::string& fc_init) {
  nn::TrainConfig c;
  c.model.width = 4;
  c.batch = 32;
  c.lr = 1e-3f;  // small: the step stays in its linear range, where the closed form below holds
  c.train_limit = 64;
  c.test_limit = 64;
  c.stop_after_steps = 1;
  c.out = out.string();
  c.fc_init = fc_init;
  quant::QuantConfig q;  // fp32 weights and activations, SAT on the last FC
  q.sat = true;
  c.quant = q.to_json();
  return c;
}

struct FirstStep {
  double n_var = 0;      // n_out Var[W] of the latent weight before training
  double eval_loss = 0;  // before training
  double d_star = 0;     // |W*1 - W*0|: the step on the effective weight
};

FirstStep first_step(const std::string& fc_init) {
  fs::path dir = test::fresh_dir("fc-init-" + fc_init);
  nn::Trainer tr(test::ctx(), one_step_config(dir, fc_init), quant::quant_plugins());
  const nn::Tensor& fc_weight = tr.network().quant_sites().classifier->weight.value;
  const int64_t n_out = fc_weight.dim(0);
  const std::vector<float> w0 = fc_weight.download();
  FirstStep r;
  r.eval_loss = tr.evaluate().loss;
  tr.run();
  const auto s0 = quant::ref::sat_forward(w0, n_out), s1 = quant::ref::sat_forward(fc_weight.download(), n_out);
  r.n_var = double(n_out) * s0.var;
  for (size_t i = 0; i < s0.w_star.size(); ++i) r.d_star += (s1.w_star[i] - s0.w_star[i]) * (s1.w_star[i] - s0.w_star[i]);
  r.d_star = std::sqrt(r.d_star);
  fs::remove_all(dir);
  return r;
}
}  // namespace

TEST_CASE("--fc-init sat: same SAT logits, and the first step on W* shrinks by n_out Var of the default init" *
          doctest::test_suite("quant-training")) {
  const FirstStep plain = first_step("default"), scaled = first_step("sat");
  MESSAGE("default init: n_out Var[W] " << plain.n_var << ", |dW*| " << plain.d_star << "; --fc-init sat: n_out Var[W] "
                                        << scaled.n_var << ", |dW*| " << scaled.d_star);
  CHECK(scaled.n_var == doctest::Approx(1.0).epsilon(1e-5));
  CHECK(plain.n_var < 0.5);  // PyTorch's U(+-1/sqrt(n_in)): n_out Var = n_out / (3 n_in), far from 1
  // W* = W / sqrt(n_out Var[W]) is the same tensor either way: the same logits and loss.
  CHECK(scaled.eval_loss == doctest::Approx(plain.eval_loss).epsilon(1e-5));
  // Same W*, so the same dL/dW*; dL/dW = dL/dW* / sqrt(n_out Var) and dW*/dW = 1 / sqrt(n_out Var):
  // the step on W* is lr dL/dW* / (n_out Var[W]).
  CHECK(plain.d_star / scaled.d_star == doctest::Approx(1.0 / plain.n_var).epsilon(0.02));
}

TEST_CASE("--fc-init sat is refused where the last FC's output scales with its weight" *
          doctest::test_suite("quant-training")) {
  fs::path dir = test::fresh_dir("fc-init-bad");
  auto cfg = one_step_config(dir, "sat");
  cfg.quant = nullptr;  // fp32 without SAT
  CHECK_THROWS_WITH_AS(nn::Trainer(test::ctx(), cfg, quant::quant_plugins()), doctest::Contains("--fc-init sat: the last FC"),
                       Error);
  quant::QuantConfig lsq;
  lsq.wbits = lsq.abits = 4;
  lsq.apply_preset("lsq", "", "");
  cfg.quant = lsq.to_json();  // LSQ without SAT: v_q = s round(v / s) keeps W's scale
  CHECK_THROWS_WITH_AS(nn::Trainer(test::ctx(), cfg, quant::quant_plugins()), doctest::Contains("lsq"), Error);
  cfg.fc_init = "huge";
  CHECK_THROWS_WITH_AS(nn::Trainer(test::ctx(), cfg, quant::quant_plugins()), doctest::Contains("--fc-init"), Error);
  fs::remove_all(dir);
}

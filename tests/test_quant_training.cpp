// Quantization-aware training end to end: W4A4 CG-PACT + SAT + aux trains; the aux loss
// alone moves the low-precision weights; SAT holds n_out Var[W*] = 1 inside the network;
// the exported low-precision checkpoint evaluates exactly like the LP head; bad inputs.
#include <filesystem>
#include <fstream>
#include <map>
#include <stdexcept>
#include <unistd.h>

#include "backend/error.h"
#include "nn/model/graph_network.h"
#include "nn/ops/reduce.h"
#include "nn/safetensors.h"
#include "nn/train/checkpoint.h"
#include "nn/train/trainer.h"
#include "quant/policy.h"
#include "testutil.h"

using namespace vkqat;
namespace fs = std::filesystem;

namespace {
nn::TrainConfig quant_config(const fs::path& out, int bits = 4) {
  nn::TrainConfig c;
  c.model.width = 4;
  c.epochs = 1;
  c.batch = 32;
  c.lr = 0.1f;
  c.train_limit = 256;
  c.test_limit = 100;
  c.log_every = 4;
  c.out = out.string();
  quant::QuantConfig q;
  q.wbits = q.abits = bits;
  q.sat = true;
  c.wbits = c.abits = bits;
  c.quant = q.to_json();
  c.aux = true;
  return c;
}

// A tensor of the network's state dict by name.
const nn::Tensor& state_tensor(nn::Network& net, const std::string& name) {
  for (const auto& [n, t] : net.state())
    if (n == name) return *t;
  FAIL("no tensor " << name << " in the state dict");
  throw std::logic_error("unreachable");
}
}  // namespace

TEST_CASE("with the LP loss weighted 0, the aux loss alone changes the low-precision weights" *
          doctest::test_suite("quant-training")) {
  fs::path dir = test::fresh_dir("q-auxonly");
  auto cfg = quant_config(dir);
  cfg.lp_weight = 0.f;
  cfg.train_limit = 64;
  nn::Trainer tr(test::ctx(), cfg, quant::quant_plugins());
  nn::Network& net = tr.network();
  const nn::Tensor &block = state_tensor(net, "layer2.1.conv1.weight"), &fc = state_tensor(net, "fc.weight"),
                   &stem = state_tensor(net, "conv1.weight");
  auto before_block = block.download();
  auto before_fc = fc.download();
  auto before_stem = stem.download();
  tr.run();
  auto after_block = block.download();
  // Weight decay alone would scale every weight by the same factor; the aux gradient does not.
  double max_change = 0;
  for (size_t i = 0; i < after_block.size(); ++i) {
    double decayed_only = before_block[i];
    max_change = std::max(max_change, std::fabs(after_block[i] - decayed_only));
  }
  CHECK(max_change > 1e-3);
  CHECK(stem.download() != before_stem);  // the stem tap reaches the first conv
  // The LP classifier gets no gradient from the aux loss: only weight decay moves it.
  auto after_fc = fc.download();
  double ratio_spread = 0, first_ratio = after_fc[0] / before_fc[0];
  for (size_t i = 0; i < after_fc.size(); ++i)
    if (std::fabs(before_fc[i]) > 1e-3) ratio_spread = std::max(ratio_spread, std::fabs(after_fc[i] / before_fc[i] - first_ratio));
  CHECK(ratio_spread < 1e-4);
  fs::remove_all(dir);
}

TEST_CASE("W4A4 CG-PACT + SAT + aux trains; the exported LP checkpoint evaluates exactly like the LP head" *
          doctest::test_suite("quant-training")) {
  fs::path dir = test::fresh_dir("q-w4a4");
  nn::TrainSummary s = nn::Trainer(test::ctx(), quant_config(dir), quant::quant_plugins()).run();
  CHECK(s.eval.has_aux);
  CHECK(std::isfinite(s.test_loss));
  auto summary = nlohmann::json::parse(std::ifstream(dir / "summary.json"));
  CHECK(summary["aux_test_acc"].is_number());

  nn::SafeTensors st = nn::read_safetensors((dir / "checkpoint.safetensors").string());
  CHECK(st.has("aux.fc.weight"));
  CHECK(st.has("aux.1.adaptor.0.weight"));
  CHECK(st.has("layer1.0.act1.alpha"));
  CHECK(st.has("fc.act.alpha"));

  // export-lp equivalent: drop aux.*, evaluate: identical LP accuracy and loss, no aux head.
  for (auto it = st.tensors.begin(); it != st.tensors.end();)
    it = it->first.rfind("aux.", 0) == 0 ? st.tensors.erase(it) : std::next(it);
  auto meta = nn::checkpoint_metadata(st);
  meta["aux"] = false;
  st.metadata["vkqat"] = meta.dump();
  nn::write_safetensors((dir / "lp.safetensors").string(), st);
  nn::EvalRequest req;
  req.checkpoint = (dir / "lp.safetensors").string();
  req.batch = 32;
  req.limit = 100;
  nn::EvalResult lp = nn::evaluate_checkpoint(test::ctx(), req, nullptr, quant::quant_plugins());
  CHECK(!lp.has_aux);
  CHECK(lp.acc == s.test_acc);
  CHECK(lp.loss == s.test_loss);
  fs::remove_all(dir);
}

TEST_CASE("SAT inside the network: n_out Var[W*] = 1 for the last FC" * doctest::test_suite("quant-training")) {
  fs::path dir = test::fresh_dir("q-sat");
  auto cfg = quant_config(dir);
  cfg.train_limit = 64;
  nn::Trainer tr(test::ctx(), cfg, quant::quant_plugins());
  tr.run();
  const nn::LinearLayer& fc = *tr.network().quant_sites().classifier;
  auto w = fc.wq.download();  // the effective weight the FC used
  double mean = 0, var = 0;
  for (float v : w) mean += v;
  mean /= double(w.size());
  for (float v : w) var += (v - mean) * (v - mean);
  var /= double(w.size());
  CHECK(fc.weight.value.dim(0) * var == doctest::Approx(1.0).epsilon(1e-5));
  fs::remove_all(dir);
}

TEST_CASE("pre-activation ResNet: W4A4 CG-PACT + SAT-conv + aux trains, and the aux loss alone reaches its weights" *
          doctest::test_suite("quant-training")) {
  fs::path dir = test::fresh_dir("q-preact");
  auto cfg = quant_config(dir);
  cfg.model.name = "preact-resnet20";
  quant::QuantConfig q = quant::quant_config_from_json(cfg.quant);
  q.sat_conv = true;  // no BN right after its convs: SAT's conv rescale is meant for this net
  cfg.quant = q.to_json();
  cfg.lp_weight = 0.f;
  cfg.train_limit = 64;
  nn::Trainer tr(test::ctx(), cfg, quant::quant_plugins());
  auto& net = dynamic_cast<nn::GraphNetwork&>(tr.network());
  std::map<std::string, const nn::ActQuantizer*> acts;
  for (const nn::ActSite& site : net.quant_sites().acts) acts[site.name] = site.quant;
  REQUIRE(acts["layer2.1.act1"]);
  REQUIRE(acts["bn.act"]);
  REQUIRE(acts["fc.act"]);
  const nn::Tensor &block = state_tensor(net, "layer2.1.conv1.weight"), &stem = state_tensor(net, "conv1.weight");
  auto before_block = block.download();
  auto before_stem = stem.download();
  nn::TrainSummary s = tr.run();
  CHECK(std::isfinite(s.test_loss));
  CHECK(s.eval.has_aux);
  double max_change = 0;
  auto after_block = block.download();
  for (size_t i = 0; i < after_block.size(); ++i)
    max_change = std::max(max_change, double(std::fabs(after_block[i] - before_block[i])));
  CHECK(max_change > 1e-3);                 // through the block taps
  CHECK(stem.download() != before_stem);  // through the stem tap

  // Evaluation runs the block convs on their integer grids (every conv but the stem's, which
  // reads the image). That an exact conv gives the float conv's values is test_grid.cpp's
  // check; the wiring is the graph's, the same for every model (test_int_model.cpp checks
  // resnet20's exact evaluation against the integer engine).
  int convs = 0;
  for (const nn::LayerDesc& l : net.description().layers)
    if (l.op == nn::LayerOp::Conv) {
      CAPTURE(l.name);
      CHECK(net.conv_exact_eval(l.name) == (l.name != "conv1"));
      ++convs;
    }
  CHECK(convs == 21);  // the stem, 9 blocks x 2, layer2.0's and layer3.0's 1x1 shortcuts
  nn::SafeTensors st = nn::read_safetensors((dir / "checkpoint.safetensors").string());
  CHECK(st.has("layer2.1.act2.alpha"));
  CHECK(st.has("bn.act.alpha"));
  CHECK(st.has("aux.9.adaptor.0.weight"));
  fs::remove_all(dir);
}

TEST_CASE("two-stage recipe: a W4A4 run --init from an FP32+aux checkpoint starts from its weights and aux module" *
          doctest::test_suite("quant-training")) {
  fs::path fp_dir = test::fresh_dir("q-stage1"), lp_dir = test::fresh_dir("q-stage2");
  auto fp = quant_config(fp_dir);
  fp.wbits = fp.abits = 32;
  fp.quant = nullptr;
  fp.train_limit = 512;
  fp.epochs = 2;
  nn::TrainSummary stage1 = nn::Trainer(test::ctx(), fp, quant::quant_plugins()).run();
  nn::SafeTensors ckpt = nn::read_safetensors((fp_dir / "checkpoint.safetensors").string());
  CHECK(!ckpt.has("layer1.0.act1.alpha"));  // FP32: no quantizer parameters to inherit

  auto lp = quant_config(lp_dir);
  lp.init = (fp_dir / "checkpoint.safetensors").string();
  lp.train_limit = 512;
  lp.epochs = 2;
  nn::Trainer tr(test::ctx(), lp, quant::quant_plugins());
  for (const char* name : {"conv1.weight", "layer2.0.conv2.weight", "fc.weight"})
    CHECK_MESSAGE(state_tensor(tr.network(), name).download() == ckpt.get_f32(name), name);
  bool aux_loaded = false;
  for (auto& [name, t] : tr.aux()->state())
    if (name == "aux.fc.weight") aux_loaded = t->download() == ckpt.get_f32("aux.fc.weight");
  CHECK(aux_loaded);
  // Evaluating before any low-bit step is not meaningful: the FP32 BN running statistics do not
  // fit DoReFa's rescaled weights until training re-estimates them. So train, then check.
  nn::TrainSummary stage2 = tr.run();
  MESSAGE("stage 1 FP32+aux test acc " << stage1.test_acc << "; stage 2 W4A4 from it: LP " << stage2.test_acc
                                       << ", aux " << stage2.eval.aux_acc);
  CHECK(stage1.test_acc > 0.25);
  CHECK(stage2.test_acc > 0.25);
  CHECK(stage2.eval.aux_acc > 0.25);
  fs::remove_all(fp_dir);
  fs::remove_all(lp_dir);
}

TEST_CASE("bad quantization inputs give clear errors" * doctest::test_suite("quant-training")) {
  quant::QuantConfig q;
  q.wbits = 9;
  CHECK_THROWS_WITH_AS(q.validate(), doctest::Contains("--wbits 9"), Error);
  q.wbits = 4;
  q.abits = 0;
  CHECK_THROWS_WITH_AS(q.validate(), doctest::Contains("--abits 0"), Error);
  q.abits = 4;
  q.quantizer = "magic";
  CHECK_THROWS_WITH_AS(q.validate(), doctest::Contains("--quantizer magic"), Error);

  fs::path dir = test::fresh_dir("q-bad");
  auto cfg = quant_config(dir);
  quant::QuantConfig bad;
  bad.wbits = bad.abits = 4;
  bad.bits_config = {{"layer9.0.conv1", {{"wbits", 2}}}};
  cfg.quant = bad.to_json();
  CHECK_THROWS_WITH_AS(nn::Trainer(test::ctx(), cfg, quant::quant_plugins()), doctest::Contains("layer9.0.conv1"), Error);

  cfg = quant_config(dir);
  cfg.model.name = "plain-cnn";
  cfg.quant = nullptr;
  CHECK_THROWS_WITH_AS(nn::Trainer(test::ctx(), cfg, quant::quant_plugins()), doctest::Contains("no residual blocks"),
                       Error);
  fs::remove_all(dir);
}

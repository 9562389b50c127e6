// The quantizer registry: --wquant / --aquant by name, --quantizer presets, --per-channel,
// configs written before the split still load, and a mixed pair trains.
#include <filesystem>
#include <unistd.h>

#include "backend/error.h"
#include "nn/train/trainer.h"
#include "quant/policy.h"
#include "quant/registry.h"
#include "testutil.h"

using namespace vkqat;
namespace fs = std::filesystem;

TEST_CASE("registry: every built-in quantizer by name; unknown names list the known ones" *
          doctest::test_suite("quant-registry")) {
  std::vector<std::string> w, a;
  for (const auto& s : quant::registry().weights) w.push_back(s.name);
  for (const auto& s : quant::registry().acts) a.push_back(s.name);
  CHECK(w == std::vector<std::string>{"dorefa", "lsq", "minmax"});
  CHECK(a == std::vector<std::string>{"dorefa", "cg-pact", "pact", "lsq", "minmax"});
  CHECK(quant::weight_quantizer("lsq").per_channel);
  CHECK(!quant::weight_quantizer("dorefa").per_channel);
  CHECK_THROWS_WITH_AS(quant::weight_quantizer("magic"), doctest::Contains("--wquant magic: unknown quantizer (known: dorefa, lsq, minmax)"),
                       Error);
  CHECK_THROWS_WITH_AS(quant::act_quantizer("relu"), doctest::Contains("--aquant relu"), Error);
  // Every preset names registered quantizers.
  for (const quant::QuantizerPreset& p : quant::quantizer_presets()) {
    CAPTURE(p.name);
    CHECK_NOTHROW(quant::weight_quantizer(p.wquant));
    CHECK_NOTHROW(quant::act_quantizer(p.aquant));
  }
}

TEST_CASE("presets and overrides: --quantizer sets both halves, --wquant / --aquant replace one" *
          doctest::test_suite("quant-registry")) {
  quant::QuantConfig q;
  q.wbits = q.abits = 4;
  q.apply_preset("dorefa-pact", "", "");
  CHECK(q.wquant == "dorefa");
  CHECK(q.aquant == "pact");
  CHECK(q.quantizer == "dorefa-pact");
  q.apply_preset("cgpact", "lsq", "");
  CHECK(q.wquant == "lsq");
  CHECK(q.aquant == "cg-pact");
  CHECK(q.quantizer == "custom");
  CHECK_NOTHROW(q.validate());
  q.apply_preset("cgpact", "", "lsq");  // an override that lands on no preset either
  CHECK(q.quantizer == "custom");
  q.apply_preset("dorefa", "lsq", "lsq");  // ... or on one: it is named
  CHECK(q.quantizer == "lsq");
  CHECK_THROWS_WITH_AS(q.apply_preset("magic", "", ""), doctest::Contains("--quantizer magic: unknown"), Error);
  CHECK_THROWS_WITH_AS(q.apply_preset("cgpact", "magic", ""), doctest::Contains("--wquant magic"), Error);

  // JSON round trip, and a config written before --wquant / --aquant existed.
  q.apply_preset("cgpact", "lsq", "pact");
  q.per_channel = true;
  quant::QuantConfig back = quant::quant_config_from_json(nlohmann::json::parse(q.to_json().dump()));
  CHECK(back.wquant == "lsq");
  CHECK(back.aquant == "pact");
  CHECK(back.per_channel);
  nlohmann::json old = {{"quantizer", "dorefa-pact"}, {"wbits", 4}, {"abits", 4}, {"edge_bits", 8},
                        {"sat", true},                {"sat_conv", false}};
  quant::QuantConfig from_old = quant::quant_config_from_json(old);
  CHECK(from_old.wquant == "dorefa");
  CHECK(from_old.aquant == "pact");
  CHECK(!from_old.per_channel);
  CHECK_NOTHROW(from_old.validate());
  old["quantizer"] = "magic";
  CHECK_THROWS_WITH_AS(quant::quant_config_from_json(old), doctest::Contains("unknown quantizer 'magic'"), Error);

  // A hand-edited config whose preset and halves disagree is refused.
  quant::QuantConfig odd;
  odd.wbits = odd.abits = 4;
  odd.quantizer = "lsq";  // but wquant/aquant still say dorefa / cg-pact
  CHECK_THROWS_WITH_AS(odd.validate(), doctest::Contains("--quantizer lsq means --wquant lsq --aquant lsq"), Error);
}

TEST_CASE("--per-channel: only for weight quantizers that have it; LSQ then learns one step per output channel" *
          doctest::test_suite("quant-registry")) {
  quant::QuantConfig q;
  q.wbits = q.abits = 4;
  q.per_channel = true;
  q.apply_preset("cgpact", "", "");
  CHECK_THROWS_WITH_AS(q.validate(), doctest::Contains("--per-channel: --wquant dorefa has one scale per tensor (per channel: lsq)"),
                       Error);
  q.apply_preset("cgpact", "lsq", "");  // LSQ weights, CG-PACT activations
  CHECK_NOTHROW(q.validate());
  q.wbits = 1;
  CHECK_THROWS_WITH_AS(q.validate(), doctest::Contains("--wquant lsq needs weight bits >= 2"), Error);
  q.wbits = 4;

  REQUIRE(fs::exists("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"));
  const fs::path dir = test::fresh_dir("registry");
  nn::TrainConfig c;
  c.model.width = 4;
  c.batch = 16;
  c.epochs = 1;
  c.train_limit = 64, c.test_limit = 32;
  c.out = dir.string();
  c.wbits = c.abits = 4;
  c.quant = q.to_json();
  nn::Trainer tr(test::ctx(), c, quant::quant_plugins());
  const nn::Tensor* step = nullptr;
  bool has_alpha = false;
  for (const auto& [name, t] : tr.network().state()) {
    if (name == "layer1.0.conv1.weight_step") step = t;
    has_alpha = has_alpha || name == "layer1.0.act1.alpha";
  }
  REQUIRE(step);
  CHECK(step->numel() == 4);  // layer1.0.conv1 has 4 output channels at width 4
  CHECK(has_alpha);           // the activations are CG-PACT's
  const std::vector<float> before = step->download();
  const nn::TrainSummary s = tr.run();
  CHECK(std::isfinite(s.test_loss));
  CHECK(step->download() != before);  // the per-channel steps were trained
  fs::remove_all(dir);
}

// The overlapped step pipeline (two staging slots, step totals copied per slot,
// multi-tensor SGD) trains bit for bit like the synchronous path it replaced, FP32 and
// W4A4 CG-PACT + SAT + aux, across an epoch boundary and an interrupt + resume.
#include <filesystem>

#include "backend/error.h"
#include "nn/safetensors.h"
#include "nn/train/trainer.h"
#include "quant/policy.h"
#include "testutil.h"

using namespace vkqat;
namespace fs = std::filesystem;

namespace {
nn::TrainConfig tiny_config(const fs::path& out, bool quantized) {
  nn::TrainConfig c;
  c.model.width = 4;
  c.epochs = 2;
  c.batch = 32;
  c.lr = 0.1f;
  c.train_limit = 224;  // 7 steps per epoch: log points at 3, 6 and the epoch end
  c.test_limit = 64;
  c.log_every = 3;
  c.out = out.string();
  if (quantized) quant::use_cgpact_sat_aux(c);
  return c;
}

// Everything a run leaves that must not depend on the pipeline: every checkpoint tensor
// (weights, BN statistics, quantizer parameters, aux.*) and every logged number but time.
void check_same_run(const fs::path& a, const fs::path& b) {
  nn::SafeTensors wa = nn::read_safetensors((a / "checkpoint.safetensors").string());
  nn::SafeTensors wb = nn::read_safetensors((b / "checkpoint.safetensors").string());
  REQUIRE(wa.tensors.size() == wb.tensors.size());
  for (auto& [name, t] : wa.tensors) {
    INFO(name);
    CHECK(wb.at(name).data == t.data);
  }
  auto ma = test::read_jsonl(a / "metrics.jsonl"), mb = test::read_jsonl(b / "metrics.jsonl");
  REQUIRE(ma.size() == mb.size());
  REQUIRE(ma.size() >= 8);  // 3 step records + 1 epoch record per epoch
  for (size_t i = 0; i < ma.size(); ++i) {
    INFO("metrics record " << i);
    for (const char* key : {"step", "lr", "loss", "acc", "aux_loss_epoch", "aux_acc_epoch", "train_loss", "train_acc",
                            "test_loss", "test_acc", "aux_test_acc"})
      CHECK(ma[i].value(key, nlohmann::json()) == mb[i].value(key, nlohmann::json()));
  }
}
}  // namespace

TEST_CASE("the overlapped pipeline trains bit-identically to the synchronous one" * doctest::test_suite("train")) {
  REQUIRE(fs::exists("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"));
  for (bool quantized : {false, true}) {
    INFO((quantized ? "W4A4 CG-PACT + SAT + aux" : "FP32"));
    fs::path sync_dir = test::fresh_dir("pipe-sync"), overlap_dir = test::fresh_dir("pipe-overlap");
    auto cfg = tiny_config(sync_dir, quantized);
    cfg.pipeline = "sync";
    nn::Trainer sync_run(test::ctx(), cfg, quant::quant_plugins());
    const nn::TrainSummary s = sync_run.run();
    cfg.out = overlap_dir.string(), cfg.pipeline = "overlap";
    nn::Trainer overlap_run(test::ctx(), cfg, quant::quant_plugins());
    const nn::TrainSummary o = overlap_run.run();
    CHECK(sync_run.pipeline_stats().mode == nn::StepPipeline::Sync);
    CHECK(overlap_run.pipeline_stats().mode == nn::StepPipeline::Overlap);
    CHECK(overlap_run.pipeline_stats().steps == 14);
    CHECK(o.json["pipeline"]["mode"] == "overlap");
    CHECK(s.json["pipeline"]["mode"] == "sync");
    CHECK(o.test_acc == s.test_acc);
    check_same_run(sync_dir, overlap_dir);
    fs::remove_all(sync_dir);
    fs::remove_all(overlap_dir);
  }
}

TEST_CASE("an overlapped run stopped mid-epoch resumes to the synchronous run's result" * doctest::test_suite("train")) {
  REQUIRE(fs::exists("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"));
  fs::path sync_dir = test::fresh_dir("pipe-whole"), stopped_dir = test::fresh_dir("pipe-stopped");
  auto cfg = tiny_config(sync_dir, false);
  cfg.pipeline = "sync";
  nn::Trainer(test::ctx(), cfg).run();
  cfg.out = stopped_dir.string(), cfg.pipeline = "overlap";
  cfg.stop_after_steps = 9;  // two steps into epoch 2, with the next step not yet submitted
  {
    nn::Trainer stopped(test::ctx(), cfg);
    CHECK(stopped.run().interrupted);
    CHECK(stopped.step() == 9);
  }
  nn::Trainer::resume(test::ctx(), stopped_dir.string())->run();
  check_same_run(sync_dir, stopped_dir);
  fs::remove_all(sync_dir);
  fs::remove_all(stopped_dir);
}

TEST_CASE("an unknown step pipeline is refused naming where it came from" * doctest::test_suite("train")) {
  CHECK(nn::step_pipeline("sync") == nn::StepPipeline::Sync);
  CHECK(nn::step_pipeline("overlap") == nn::StepPipeline::Overlap);
  CHECK_THROWS_WITH_AS(nn::step_pipeline("async"), doctest::Contains("'async' is unknown"), Error);
  {
    test::ScopedEnv env("VKQAT_PIPELINE", "fast");
    CHECK_THROWS_WITH_AS(nn::step_pipeline(""), doctest::Contains("VKQAT_PIPELINE 'fast'"), Error);
    CHECK(nn::step_pipeline("sync") == nn::StepPipeline::Sync);  // the config wins over the variable
  }
  test::ScopedEnv unset("VKQAT_PIPELINE", "");  // empty counts as unset
  CHECK(nn::step_pipeline("") == nn::StepPipeline::Overlap);
}

// Checkpoints written by the hand-written model classes (ResNet, PreActResNet, PlainCnn), which
// the built-in models were until issue 18 made them descriptions run by GraphNetwork: written
// by the release binary of that time (commit 668adce) at width 2 after 8 steps on 256
// Fashion-MNIST images (tests/data/hand-written/checkpoints.json: the commands, and what that
// binary's `vkqat eval --json` said on the first 64 test images). They load, evaluate to the
// same accuracy and loss (the logits' mean cross-entropy, so the logits too), and an
// interrupted run of theirs resumes.
#include <filesystem>
#include <fstream>

#include "nn/train/trainer.h"
#include "quant/policy.h"
#include "testutil.h"

using namespace vkqat;
namespace fs = std::filesystem;

namespace {
fs::path hand_written_data() {
  const char* data = std::getenv("VKQAT_TEST_DATA");
  REQUIRE(data);
  return fs::path(data) / "hand-written";
}
}  // namespace

TEST_CASE("checkpoints of the hand-written classes evaluate to the accuracy and loss they had" *
          doctest::test_suite("train")) {
  std::ifstream in(hand_written_data() / "checkpoints.json");
  REQUIRE(in);
  const nlohmann::json manifest = nlohmann::json::parse(in);
  REQUIRE(manifest["checkpoints"].size() >= 3);
  for (const auto& c : manifest["checkpoints"]) {
    const std::string file = c["file"];
    CAPTURE(file);
    nn::EvalRequest req;
    req.checkpoint = (hand_written_data() / file).string();
    req.limit = manifest["limit"].get<int>();
    const nn::EvalResult r = nn::evaluate_checkpoint(test::ctx(), req, nullptr, quant::quant_plugins());
    const nlohmann::json& want = c["eval"];
    CHECK(r.images == req.limit);
    CHECK(std::lround(r.acc * r.images) == std::lround(want["test_acc"].get<double>() * req.limit));
    // Float summation order differs between the two engines: 1e-5 of the loss.
    CHECK(r.loss == doctest::Approx(want["test_loss"].get<double>()).epsilon(1e-5));
    CHECK(r.has_aux == !want["aux_test_acc"].is_null());
    if (r.has_aux) CHECK(std::lround(r.aux_acc * r.images) == std::lround(want["aux_test_acc"].get<double>() * req.limit));
  }
}

TEST_CASE("an interrupted run of the hand-written classes resumes and ends where it did uninterrupted" *
          doctest::test_suite("train")) {
  std::ifstream in(hand_written_data() / "checkpoints.json");
  REQUIRE(in);
  const nlohmann::json want = nlohmann::json::parse(in)["resume"];
  const fs::path dir = test::fresh_dir("hand-written-resume");
  fs::copy(hand_written_data() / want["run"].get<std::string>(), dir, fs::copy_options::recursive);
  auto tr = nn::Trainer::resume(test::ctx(), dir.string(), {}, quant::quant_plugins());
  CHECK(tr->step() == want["step"].get<int>());
  const nn::TrainSummary s = tr->run();
  CHECK(tr->step() == want["steps"].get<int>());
  MESSAGE("resumed: test loss " << s.test_loss << ", acc " << s.test_acc << "; uninterrupted then: " << want["test_loss"]
                                << ", " << want["test_acc"]);
  // Four steps of float summation in another order (the W4A4 quantizers could round a value
  // the other way): 1e-4 of the loss; measured the same to 6 digits.
  CHECK(s.test_loss == doctest::Approx(want["test_loss"].get<double>()).epsilon(1e-4));
  fs::remove_all(dir);
}

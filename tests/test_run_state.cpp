// Nothing lost, nothing silent (issue 16): checkpoint + trainer state committed as one unit
// (a kill at every write/rename point of a save still resumes bit-identically), the
// divergence guard, checked hyper-parameters and inputs, and file-naming errors for
// damaged checkpoints, trainer states and integer models.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "backend/error.h"
#include "nn/safetensors.h"
#include "nn/train/checkpoint.h"
#include "nn/train/run_state.h"
#include "nn/train/trainer.h"
#include "quant/int_model.h"
#include "quant/policy.h"
#include "testutil.h"

using namespace vkqat;
namespace fs = std::filesystem;

namespace {
bool have_fashion_mnist() { return fs::exists("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"); }

// A tiny run: 256 training images, batch 32 (8 steps per epoch), 2 epochs, width 4.
nn::TrainConfig tiny_config(const fs::path& out) {
  nn::TrainConfig c;
  c.model.name = "resnet20";
  c.model.width = 4;
  c.epochs = 2;
  c.batch = 32;
  c.lr = 0.05f;
  c.train_limit = 256;
  c.test_limit = 64;
  c.log_every = 4;
  c.out = out.string();
  return c;
}

void write_bytes(const fs::path& p, const std::vector<uint8_t>& b) {
  std::ofstream(p, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
}
std::vector<uint8_t> be32(uint32_t v) { return {uint8_t(v >> 24), uint8_t(v >> 16), uint8_t(v >> 8), uint8_t(v)}; }
// An IDX image/label pair of n random h x w images.
void write_idx_split(const fs::path& dir, const std::string& prefix, int n, int h, int w, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> img = be32(2051), lab = be32(2049);
  for (uint32_t v : {uint32_t(n), uint32_t(h), uint32_t(w)})
    for (uint8_t b : be32(v)) img.push_back(b);
  for (uint8_t b : be32(uint32_t(n))) lab.push_back(b);
  for (int i = 0; i < n * h * w; ++i) img.push_back(uint8_t(rng()));
  for (int i = 0; i < n; ++i) lab.push_back(uint8_t(rng() % 10));
  write_bytes(dir / (prefix + "-images-idx3-ubyte"), img);
  write_bytes(dir / (prefix + "-labels-idx1-ubyte"), lab);
}

std::vector<uint8_t> file_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

// Sets the learning rate far too high once the first epoch is saved.
struct BlowUpAfter : nn::TrainHooks {
  int64_t at;
  explicit BlowUpAfter(int64_t step) : at(step) {}
  bool before_step(nn::Trainer& t) override {
    if (t.step() == at) t.set_learning_rate(1e6f);
    return true;
  }
};
}  // namespace

TEST_CASE("a kill at every write and rename of a save leaves a run that resumes bit-identically" *
          doctest::test_suite("train")) {
  REQUIRE(have_fashion_mnist());
  const fs::path whole_dir = test::fresh_dir("rs-whole");
  const nn::TrainSummary whole = nn::Trainer(test::ctx(), tiny_config(whole_dir)).run();
  const auto whole_ckpt = nn::read_safetensors((whole_dir / "checkpoint.safetensors").string());

  auto check_same_as_whole = [&](const fs::path& dir, const nn::TrainSummary& s) {
    CHECK(s.test_acc == whole.test_acc);
    CHECK(s.test_loss == whole.test_loss);
    const auto ckpt = nn::read_safetensors((dir / "checkpoint.safetensors").string());
    REQUIRE(ckpt.tensors.size() == whole_ckpt.tensors.size());
    size_t differing = 0;
    for (const auto& [name, t] : whole_ckpt.tensors) differing += ckpt.at(name).data != t.data;
    CHECK(differing == 0);
    CHECK(file_bytes(dir / "metrics.jsonl").size() > 0);
  };

  // The second save of the process is the interruption at step 11 (the first: end of epoch 1).
  for (const char* point :
       {"checkpoint-written", "unit-written", "unit-renamed", "manifest-written", "checkpoint-published"}) {
    CAPTURE(point);
    const fs::path dir = test::fresh_dir("rs-" + std::string("fault-") + point);
    auto cfg = tiny_config(dir);
    cfg.stop_after_steps = 11;
    {
      test::ScopedEnv fault("VKQAT_FAULT_AT", (std::string(point) + "@2").c_str());
      CHECK_THROWS_AS(nn::Trainer(test::ctx(), cfg).run(), nn::InjectedFault);
    }
    const bool committed = std::string(point) == "manifest-written" || std::string(point) == "checkpoint-published";
    CHECK(nn::committed_step(dir.string()) == (committed ? 11 : 8));
    auto resumed = nn::Trainer::resume(test::ctx(), dir.string());
    CHECK(resumed->step() == (committed ? 11 : 8));
    check_same_as_whole(dir, resumed->run());
    // The interrupted save's leftovers are gone; one unit is kept (the default).
    int units = 0;
    for (const auto& e : fs::directory_iterator(dir / "checkpoints")) {
      CHECK_MESSAGE(e.path().extension() != ".tmp", e.path());
      ++units;
    }
    CHECK(units == 1);
    fs::remove_all(dir);
  }

  SUBCASE("a run of the earlier layout (no run_state.json) still resumes") {
    const fs::path dir = test::fresh_dir("rs-legacy");
    auto cfg = tiny_config(dir);
    cfg.stop_after_steps = 11;
    CHECK(nn::Trainer(test::ctx(), cfg).run().interrupted);
    const nn::CommittedRunState unit = nn::load_run_state(dir.string());
    fs::copy_file(unit.trainer_state_path, dir / "trainer_state.safetensors");
    fs::remove_all(dir / "checkpoints");
    fs::remove(dir / "run_state.json");
    check_same_as_whole(dir, nn::Trainer::resume(test::ctx(), dir.string())->run());
    CHECK(fs::exists(dir / "run_state.json"));
    CHECK_FALSE(fs::exists(dir / "trainer_state.safetensors"));
    fs::remove_all(dir);
  }
  fs::remove_all(whole_dir);
}

TEST_CASE("--keep-checkpoints keeps the last K units; checkpoint.safetensors is the newest" *
          doctest::test_suite("train")) {
  REQUIRE(have_fashion_mnist());
  const fs::path dir = test::fresh_dir("rs-keep");
  auto cfg = tiny_config(dir);
  cfg.epochs = 3;
  cfg.keep_checkpoints = 2;
  nn::Trainer(test::ctx(), cfg).run();
  std::set<std::string> units;
  for (const auto& e : fs::directory_iterator(dir / "checkpoints")) units.insert(e.path().filename().string());
  CHECK(units == std::set<std::string>{"step-16", "step-24"});
  CHECK(file_bytes(dir / "checkpoint.safetensors") == file_bytes(dir / "checkpoints/step-24/checkpoint.safetensors"));
  const auto manifest = nlohmann::json::parse(std::ifstream(dir / "run_state.json"));
  CHECK(manifest["step"] == 24);
  cfg.keep_checkpoints = 0;
  CHECK_THROWS_WITH_AS(nn::Trainer(test::ctx(), cfg), doctest::Contains("--keep-checkpoints"), Error);
  fs::remove_all(dir);
}

TEST_CASE("divergence stops training, names step, loss and the last good checkpoint, which stays finite" *
          doctest::test_suite("train")) {
  REQUIRE(have_fashion_mnist());
  const fs::path dir = test::fresh_dir("rs-diverge");
  nn::Trainer tr(test::ctx(), tiny_config(dir));
  BlowUpAfter hook(8);  // epoch 1 (steps 1..8) is saved, then lr 1e6
  tr.set_hooks(&hook);
  std::string message;
  try {
    tr.run();
  } catch (const Error& e) {
    message = e.what();
  }
  MESSAGE(message);
  CHECK(message.find("diverged at step ") != std::string::npos);
  CHECK((message.find("loss nan") != std::string::npos || message.find("loss inf") != std::string::npos ||
         message.find("loss -nan") != std::string::npos));
  CHECK(message.find("step 8, is " + dir.string() + "/checkpoint.safetensors") != std::string::npos);
  const auto ckpt = nn::read_safetensors((dir / "checkpoint.safetensors").string());
  CHECK(nn::first_non_finite_tensor(ckpt) == "");
  CHECK(nn::checkpoint_metadata(ckpt)["step"] == 8);
  auto resumed = nn::Trainer::resume(test::ctx(), dir.string());
  CHECK(resumed->step() == 8);
  CHECK(std::isfinite(resumed->evaluate().loss));

  // Non-finite weights are never saved over the good checkpoint.
  resumed->network().parameters().front()->value.upload(
      std::vector<float>(size_t(resumed->network().parameters().front()->value.numel()), NAN));
  CHECK_THROWS_WITH_AS(resumed->save_checkpoint(), doctest::Contains("non-finite"), Error);
  CHECK(nn::first_non_finite_tensor(nn::read_safetensors((dir / "checkpoint.safetensors").string())) == "");
  CHECK(nn::committed_step(dir.string()) == 8);
  fs::remove_all(dir);
}

TEST_CASE("non-finite or out-of-range hyper-parameters are refused before training" * doctest::test_suite("train")) {
  REQUIRE(have_fashion_mnist());
  const fs::path dir = test::fresh_dir("rs-hyper");
  auto refused = [&](auto change, const char* flag) {
    auto cfg = tiny_config(dir);
    change(cfg);
    CHECK_THROWS_WITH_AS(nn::Trainer(test::ctx(), cfg), doctest::Contains(flag), Error);
  };
  refused([](nn::TrainConfig& c) { c.log_every = 0; }, "--log-every");  // was SIGFPE
  refused([](nn::TrainConfig& c) { c.lr = INFINITY; }, "--lr");
  refused([](nn::TrainConfig& c) { c.lr = NAN; }, "--lr");
  refused([](nn::TrainConfig& c) { c.warmup_epochs = NAN; }, "--warmup-epochs");
  refused([](nn::TrainConfig& c) { c.momentum = NAN; }, "--momentum");
  refused([](nn::TrainConfig& c) { c.weight_decay = INFINITY; }, "--wd");
  refused([](nn::TrainConfig& c) { c.aux_weight = NAN; }, "--aux-weight");
  refused([](nn::TrainConfig& c) { c.test_limit = -5; }, "--test-limit");
  fs::remove_all(dir);
}

TEST_CASE("a test set of another image size than the training set is an error, not an overflow" *
          doctest::test_suite("train")) {
  const fs::path data = test::fresh_dir("rs-sizes");
  fs::create_directories(data);
  write_idx_split(data, "train", 64, 28, 28, 1);
  for (int side : {32, 20}) {  // larger test images overflowed the upload buffer; smaller ones gave nonsense
    CAPTURE(side);
    write_idx_split(data, "t10k", 16, side, side, 2);
    auto cfg = tiny_config(test::fresh_dir("rs-sizes-run"));
    cfg.data_dir = data.string();
    cfg.batch = 16;
    cfg.train_limit = cfg.test_limit = 0;
    CHECK_THROWS_WITH_AS(nn::Trainer(test::ctx(), cfg), doctest::Contains(doctest::String(("test images are 1x" + std::to_string(side)).c_str())),
                         Error);
  }
  // eval of a 28x28 checkpoint on them is refused as well (the existing check).
  write_idx_split(data, "t10k", 16, 28, 28, 2);
  auto cfg = tiny_config(test::fresh_dir("rs-sizes-run"));
  cfg.data_dir = data.string();
  cfg.batch = 16;
  cfg.train_limit = cfg.test_limit = 0;
  nn::Trainer ok(test::ctx(), cfg);  // equal sizes train
  CHECK(ok.config().data_dir == fs::absolute(data).lexically_normal().string());
  fs::remove_all(data);
}

TEST_CASE("a full disk at summary.json is an error, not an empty file and exit 0" * doctest::test_suite("train")) {
  REQUIRE(have_fashion_mnist());
  const fs::path dir = test::fresh_dir("rs-full");
  fs::create_directories(dir);
  fs::create_symlink("/dev/full", dir / "summary.json.tmp");  // every write to it fails with ENOSPC
  auto cfg = tiny_config(dir);
  cfg.epochs = 1;
  CHECK_THROWS_WITH_AS(nn::Trainer(test::ctx(), cfg).run(), doctest::Contains("summary.json"), Error);
  CHECK_FALSE(fs::exists(dir / "summary.json"));
  CHECK_THROWS_WITH_AS(nn::write_file_durably("/dev/full/x", "text"), doctest::Contains("/dev/full/x"), Error);
  fs::remove_all(dir);
}

TEST_CASE("--resume: relative paths are stored absolute; --epochs and --data-dir apply; damaged state is named" *
          doctest::test_suite("train")) {
  REQUIRE(have_fashion_mnist());
  const fs::path dir = test::fresh_dir("rs-resume-args");
  auto cfg = tiny_config(dir);
  cfg.stop_after_steps = 3;
  const fs::path old_cwd = fs::current_path();
  fs::current_path("/usr/share/datasets");
  cfg.data_dir = "fashion-mnist";  // relative
  CHECK(nn::Trainer(test::ctx(), cfg).run().interrupted);
  fs::current_path(old_cwd);
  const nn::TrainConfig stored = nn::Trainer::stored_config(dir.string());
  CHECK(stored.data_dir == "/usr/share/datasets/fashion-mnist");
  nn::ResumeOptions change;
  change.epochs = 3;
  change.data_dir = "/usr/share/datasets/fashion-mnist/";
  change.log_every = 2;
  auto resumed = nn::Trainer::resume(test::ctx(), dir.string(), change);
  CHECK(resumed->config().epochs == 3);
  CHECK(resumed->config().log_every == 2);
  CHECK(resumed->step() == 3);

  // A trainer state without "epoch": an Error naming the file (was an internal error, exit 3).
  const nn::CommittedRunState unit = nn::load_run_state(dir.string());
  nn::SafeTensors state = unit.trainer_state;
  auto t = nlohmann::json::parse(state.metadata["trainer"]);
  t.erase("epoch");
  state.metadata["trainer"] = t.dump();
  nn::write_safetensors(unit.trainer_state_path, state);
  CHECK_THROWS_WITH_AS(nn::Trainer::resume(test::ctx(), dir.string()), doctest::Contains("trainer_state.safetensors"),
                       Error);
  fs::remove_all(dir);
}

TEST_CASE("damaged metadata is reported against the file, never as a JSON internal error" *
          doctest::test_suite("train")) {
  nn::ModelConfig mc;
  mc.width = 4;
  auto net = nn::build_network(test::ctx(), mc, 2);
  net->init(0);
  nn::SafeTensors st = nn::network_state(*net, 0);
  st.source = "ck.safetensors";
  nlohmann::json good = {{"format", "vkqat-checkpoint-1"}, {"model", mc.to_json()}, {"aux", false}, {"wbits", 32}};
  st.metadata["vkqat"] = good.dump();
  CHECK(nn::checkpoint_metadata(st)["aux"] == false);
  auto damaged = [&](const char* key, nlohmann::json value, const char* says) {
    nlohmann::json m = good;
    m[key] = value;
    st.metadata["vkqat"] = m.dump();
    CHECK_THROWS_WITH_AS(nn::checkpoint_metadata(st), doctest::Contains("ck.safetensors"), Error);
    CHECK_THROWS_WITH_AS(nn::checkpoint_metadata(st), doctest::Contains(says), Error);
  };
  damaged("aux", "yes", "'aux'");
  damaged("wbits", 99, "'wbits'");
  damaged("quant", {{"wbits", 99}}, "quant 'wbits'");
  nlohmann::json wide = mc.to_json();
  wide["width"] = 0;
  damaged("model", wide, "implausible model config");  // not "--width", a flag never passed

  // Integer model with an unknown or non-string format.
  const fs::path dir = test::fresh_dir("rs-meta");
  fs::create_directories(dir);
  for (const nlohmann::json& format : {nlohmann::json(5), nlohmann::json("vkqat-int-99")}) {
    nn::SafeTensors im;
    im.add_f32("x", {1}, {0.f});
    im.metadata["vkqat_int"] = nlohmann::json{{"format", format}}.dump();
    nn::write_safetensors((dir / "int.safetensors").string(), im);
    CHECK_THROWS_WITH_AS(quant::read_int_model((dir / "int.safetensors").string()), doctest::Contains("format"), Error);
  }
  // Numbers beyond int/float range (a float-to-int conversion was undefined behaviour; fuzz_model_config).
  CHECK_THROWS_WITH_AS(quant::quant_config_from_json(nlohmann::json::parse(
                           R"({"quantizer": "cgpact", "wbits": 7.7e73, "abits": 4, "edge_bits": 8, "sat": false,
                               "sat_conv": false, "bits_config": {}})")),
                       doctest::Contains("'wbits' must be an integer"), Error);
  nlohmann::json huge = mc.to_json();
  huge["width"] = 1e80;
  CHECK_THROWS_WITH_AS(nn::ModelConfig::from_json(huge), doctest::Contains("'width'"), Error);
  huge["width"] = 4294967300LL;
  CHECK_THROWS_WITH_AS(nn::ModelConfig::from_json(huge), doctest::Contains("out of range"), Error);
  nlohmann::json tc = tiny_config("x").to_json();
  tc["lr"] = 1e300;
  CHECK_THROWS_WITH_AS(nn::TrainConfig::from_json(tc), doctest::Contains("'lr' is out of range"), Error);

  // --bits-config naming a directory.
  CHECK_THROWS_WITH_AS(quant::load_bits_config(dir.string()), doctest::Contains("is a directory"), Error);
  fs::remove_all(dir);
}

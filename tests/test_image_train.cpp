// Training and evaluation on a generated image folder and its cache: the network learns,
// classes.json and the checkpoint metadata carry the class names, eval reproduces the
// final accuracy from the folder and from the cache, the data-wait fraction is recorded,
// and a resumed folder run is bit-identical.
#include <filesystem>
#include <fstream>

#include "backend/error.h"
#include "image_test_util.h"
#include "nn/data/image_cache.h"
#include "nn/safetensors.h"
#include "nn/train/checkpoint.h"
#include "nn/train/trainer.h"
#include "testutil.h"

using namespace vkqat;
namespace fs = std::filesystem;

namespace {

// Two classes told apart by brightness and stripe direction, 16x16..24x20 RGB PNG/JPEG.
void make_two_class_folder(const test::TempFolder& t, int train_per_class, int val_per_class) {
  for (int split = 0; split < 2; ++split)
    for (int c = 0; c < 2; ++c)
      for (int i = 0; i < (split ? val_per_class : train_per_class); ++i) {
        const int w = 16 + (i % 3) * 4, h = 16 + (i % 2) * 4;
        std::vector<uint8_t> px(size_t(w) * h * 3);
        for (int y = 0; y < h; ++y)
          for (int x = 0; x < w; ++x)
            for (int k = 0; k < 3; ++k) {
              const int stripe = ((c ? x : y) / 2) % 2;
              px[(size_t(y) * w + x) * 3 + k] = uint8_t((c ? 150 : 60) + stripe * 60 + ((i * 7 + k * 13 + x * y) % 23));
            }
        const std::string dir = std::string(split ? "val/" : "train/") + (c ? "stripes_v" : "stripes_h");
        const std::string f = t / (dir + "/" + std::to_string(i) + (i % 4 == 3 ? ".jpg" : ".png"));
        if (i % 4 == 3) {
          test::make_parent(f);
          stbi_write_jpg(f.c_str(), w, h, 3, px.data(), 95);
        } else {
          test::write_png_pixels(f, w, h, 3, px);
        }
      }
}

nn::TrainConfig folder_config(const std::string& data, const std::string& dir, const fs::path& out) {
  nn::TrainConfig c;
  c.data = data;
  c.data_dir = dir;
  c.data_options.image_size = 16;
  c.data_options.augment = "crop";
  c.data_options.workers = 2;
  c.model.name = "resnet20";
  c.model.width = 4;
  c.epochs = 2;
  c.batch = 16;
  c.lr = 0.05f;
  c.log_every = 4;
  c.out = out.string();
  return c;
}

}  // namespace

TEST_CASE("train on an image folder: learns, classes.json, metadata, eval from folder and cache" * doctest::test_suite("image")) {
  test::TempFolder t;
  make_two_class_folder(t, 64, 16);
  const fs::path run = t.path / "run";
  nn::TrainConfig cfg = folder_config("folder", (t.path).string(), run);
  nn::TrainSummary s = nn::Trainer(test::ctx(), cfg).run();
  CHECK(s.test_acc >= 0.9);
  std::ifstream cj(run / "classes.json");
  CHECK(nlohmann::json::parse(cj) == nlohmann::json({"stripes_h", "stripes_v"}));
  nn::SafeTensors ck = nn::read_safetensors((run / "checkpoint.safetensors").string());
  nlohmann::json meta = nn::checkpoint_metadata(ck);
  CHECK(meta["classes"] == nlohmann::json({"stripes_h", "stripes_v"}));
  CHECK(meta["data_options"]["image_size"] == 16);
  CHECK(meta["model"]["in_channels"] == 3);
  for (const nlohmann::json& r : test::read_jsonl(run / "metrics.jsonl")) {
    REQUIRE(r.contains("data_wait"));
    CHECK(r["data_wait"].get<double>() >= 0.0);
    CHECK(r["data_wait"].get<double>() <= 1.0);
  }

  nn::EvalRequest req;
  req.checkpoint = (run / "checkpoint.safetensors").string();
  req.data = "folder";
  req.data_dir = t.path.string();
  nn::EvalResult e = nn::evaluate_checkpoint(test::ctx(), req);
  CHECK(e.images == 32);
  CHECK(e.acc == s.test_acc);
  CHECK(e.loss == doctest::Approx(s.test_loss).epsilon(1e-6));
  CHECK(e.class_total == std::vector<int64_t>{16, 16});
  CHECK(double(e.class_correct[0] + e.class_correct[1]) / 32 == doctest::Approx(e.acc));

  // The cache of the folder (base size 16 for crop mode at 16 px) evaluates identically.
  const std::string cache = t / "c.vkqc";
  nn::DataOptions co;
  co.workers = 2;
  nn::write_image_cache(t.path.string(), 16, cache, co);
  req.data = "cache";
  req.data_dir = cache;
  nn::EvalResult ec = nn::evaluate_checkpoint(test::ctx(), req);
  CHECK(ec.acc == e.acc);
  CHECK(ec.loss == e.loss);

  // A folder with other class names is refused.
  test::TempFolder other;
  test::write_png(other / "train/x/1.png", 16, 16, 3);
  test::write_png(other / "train/y/1.png", 16, 16, 3);
  test::write_png(other / "val/x/1.png", 16, 16, 3);
  req.data = "folder";
  req.data_dir = other.path.string();
  CHECK_THROWS_WITH_AS(nn::evaluate_checkpoint(test::ctx(), req), doctest::Contains("other classes"), Error);
}

TEST_CASE("folder training resumes bit for bit; folder and cache train identically" * doctest::test_suite("image")) {
  test::TempFolder t;
  make_two_class_folder(t, 32, 8);
  nn::TrainConfig a = folder_config("folder", t.path.string(), t.path / "a");
  a.data_options.augment = "imagenet";  // base 18, RandomResizedCrop to 16
  nn::TrainSummary whole = nn::Trainer(test::ctx(), a).run();

  nn::TrainConfig b = a;
  b.out = (t.path / "b").string();
  b.data_options.workers = 1;  // another worker count changes nothing
  b.stop_after_steps = 5;      // mid-way through epoch 2 (4 steps per epoch)
  CHECK(nn::Trainer(test::ctx(), b).run().interrupted);
  nn::TrainSummary resumed = nn::Trainer::resume(test::ctx(), b.out)->run();
  CHECK(resumed.test_acc == whole.test_acc);
  CHECK(resumed.test_loss == whole.test_loss);

  const std::string cache = t / "c.vkqc";
  nn::write_image_cache(t.path.string(), 18, cache, {});
  nn::TrainConfig c = a;
  c.data = "cache";
  c.data_dir = cache;
  c.out = (t.path / "c").string();
  nn::TrainSummary from_cache = nn::Trainer(test::ctx(), c).run();
  CHECK(from_cache.test_acc == whole.test_acc);
  CHECK(from_cache.test_loss == whole.test_loss);
  nn::SafeTensors wa = nn::read_safetensors((t.path / "a/checkpoint.safetensors").string());
  nn::SafeTensors wc = nn::read_safetensors((t.path / "c/checkpoint.safetensors").string());
  size_t differing = 0;
  for (auto& [name, tensor] : wa.tensors) differing += wc.at(name).data != tensor.data;
  CHECK(differing == 0);
}

TEST_CASE("bad data options give clear errors" * doctest::test_suite("image")) {
  test::TempFolder t;
  nn::TrainConfig c = folder_config("folder", "", t.path / "x");
  CHECK_THROWS_WITH_AS(nn::Trainer(test::ctx(), c), doctest::Contains("--data folder needs --data-dir"), Error);
  c.data = "fashion-mnist";
  c.data_dir.clear();
  CHECK_THROWS_WITH_AS(nn::Trainer(test::ctx(), c), doctest::Contains("apply to --data folder and cache only"), Error);
  c.data_options = {};
  c.data_options.augment = "imagenet";
  CHECK_THROWS_WITH_AS(nn::Trainer(test::ctx(), c), doctest::Contains("--augment imagenet"), Error);
  c.data_options.augment = "sideways";
  CHECK_THROWS_WITH_AS(nn::Trainer(test::ctx(), c), doctest::Contains("--augment sideways"), Error);
  c.data_options = {};
  c.data_options.std = {0.f};
  CHECK_THROWS_WITH_AS(nn::Trainer(test::ctx(), c), doctest::Contains("--std"), Error);
  c.data_options = {};
  c.data_options.mean = {0.1f, 0.2f, 0.3f};
  CHECK_THROWS_WITH_AS(nn::Trainer(test::ctx(), c), doctest::Contains("three values given for grayscale"), Error);
}

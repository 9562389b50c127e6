// The integer model end to end: train width-4 W4A4 / W2A2 CG-PACT + SAT + aux ResNet-20s
// for a few steps, export, and check (a) the GPU engine equals the CPU integer reference
// layer by layer, bit for bit, (b) predictions agree with the fake-quant model, (c) the
// file round-trips and is small (width 16: <= 1/6 of FP32 at 4 bits, <= 1/10 at 2 bits),
// (d) bad inputs (FP32 / unsupported checkpoints, corrupt files, shape mismatch) throw.
#include <filesystem>
#include <functional>
#include <fstream>
#include <random>
#include <set>
#include <unistd.h>

#include "backend/error.h"
#include "nn/data/dataset.h"
#include "nn/train/checkpoint.h"
#include "nn/train/trainer.h"
#include "quant/int_engine.h"
#include "quant/int_export.h"
#include "quant/int_infer.h"
#include "quant/int_reference.h"
#include "quant/policy.h"
#include "testutil.h"

using namespace vkqat;
namespace fs = std::filesystem;

namespace {

fs::path temp_dir(const std::string& name) {
  fs::path p = fs::temp_directory_path() / ("vkqat-inttest-" + name + "-" + std::to_string(::getpid()));
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

// A short W{bits}A{bits} cgpact + SAT + aux run of a width-4 ResNet-20; returns its checkpoint.
fs::path train_quantized(const fs::path& dir, int bits) {
  nn::TrainConfig c;
  c.model.width = 4;
  c.epochs = 1;
  c.batch = 64;
  c.lr = 0.05f;
  c.train_limit = 1280;
  c.test_limit = 32;
  c.log_every = 100;
  c.out = dir.string();
  quant::QuantConfig q;
  q.wbits = q.abits = c.wbits = c.abits = bits;
  q.sat = true;
  c.quant = q.to_json();
  c.aux = true;
  nn::Trainer(test::ctx(), c, quant::quant_plugins()).run();
  return dir / "checkpoint.safetensors";
}

// An untrained (initialised) checkpoint of any config, FP32 file as the trainer writes it.
fs::path init_checkpoint(const fs::path& path, int width, const quant::QuantConfig* q) {
  nn::ModelConfig mc;
  mc.width = width;
  auto net = nn::build_network(test::ctx(), mc, 1);
  nlohmann::json meta = {{"format", "vkqat-checkpoint-1"},
                         {"model", mc.to_json()},
                         {"normalization", {{"mean", {0.286, 0.286, 0.286}}, {"std", {0.353, 0.353, 0.353}}}}};
  if (q) {
    net->apply_quant_policy(*quant::make_quant_policy(*q));
    meta["quant"] = q->to_json();
  }
  net->init(0);
  nn::SafeTensors st = nn::network_state(*net, 0);
  st.metadata["vkqat"] = meta.dump();
  nn::write_safetensors(path.string(), st);
  return path;
}

void check_parity(int bits) {
  const fs::path dir = temp_dir("w" + std::to_string(bits));
  const fs::path ckpt = train_quantized(dir, bits);
  const fs::path model_path = dir / "model.safetensors";
  quant::write_int_model(model_path.string(), quant::export_int_model(ckpt.string()));
  const quant::IntModel m = quant::read_int_model(model_path.string());
  auto conv = [&](const char* name) -> const quant::IntNode& {
    REQUIRE(m.index_of(name) >= 0);
    return m.nodes[size_t(m.index_of(name))];
  };
  CHECK(conv("conv1").conv.wbits == 8);
  CHECK(conv("conv1").mode == quant::IntConvMode::Stem);
  CHECK(conv("layer1.0.conv1").conv.wbits == bits);
  CHECK(conv("layer1.0.conv1").conv.levels == (1 << bits) - 1);
  CHECK(conv("layer2.0.downsample.0").mode == quant::IntConvMode::Raw);
  CHECK(conv("layer2.0.conv2").inputs == std::vector<std::string>{"layer2.0.conv1", "layer2.0.downsample.0"});
  CHECK(conv("layer2.1.conv2").inputs == std::vector<std::string>{"layer2.1.conv1", "layer2.0.conv2"});
  CHECK(m.fc().conv.wbits == 8);
  CHECK(m.count(quant::IntOp::Conv) == 1 + 9 * 2 + 2);  // stem, 9 blocks, 2 downsample convs

  nn::Dataset test = nn::first_n(nn::load_dataset("fashion-mnist", "", false), 300);
  // (a) layer by layer, GPU vs CPU integer reference, on the first 16 images at batch 16.
  const int n = 16;
  std::vector<uint8_t> px(test.image(0), test.image(0) + size_t(n) * test.image_size());
  quant::IntEngine engine(test::ctx(), m, n);
  const std::vector<float> logits = engine.run(px, n);
  const quant::ref::IntTrace want = quant::ref::int_forward(m, px, n);
  const auto got = engine.layer_outputs(n);
  REQUIRE(got.size() == want.layers.size());
  for (size_t i = 0; i < got.size(); ++i) {
    INFO("layer " << want.layers[i].first);
    CHECK(got[i].first == want.layers[i].first);
    CHECK(got[i].second == want.layers[i].second);
  }
  CHECK(logits == want.logits);
  // (b) agreement with the fake-quant model on 300 images. Its evaluation sums the quantized
  // convs exactly (nn/ops/grid.h), so only the float rounding of BN + requantization (and the
  // stem's float input) separates the two: a near-tied few-step model may still flip one.
  const quant::IntInferReport r = quant::infer_int_model(test::ctx(), m, test, 64, 2);
  const std::vector<int> fq = quant::fake_quant_predictions(test::ctx(), ckpt.string(), test, 100);
  int agree = 0, fq_correct = 0;
  for (int i = 0; i < test.n; ++i) agree += fq[i] == r.predictions[i], fq_correct += fq[i] == test.labels[i];
  MESSAGE("W" << bits << "A" << bits << ": agreement " << agree << "/" << test.n << ", int acc " << r.accuracy
              << ", fake-quant acc " << double(fq_correct) / test.n);
  CHECK(std::set<int>(r.predictions.begin(), r.predictions.end()).size() >= 3);  // not a collapsed model
  CHECK(agree >= test.n - 1);
  CHECK(std::fabs(r.accuracy - double(fq_correct) / test.n) <= 1.0 / test.n + 1e-12);
  fs::remove_all(dir);
}

}  // namespace

TEST_CASE("W4A4 aux+SAT: integer engine == CPU integer reference layer by layer; agrees with fake-quant" *
          doctest::test_suite("int")) {
  check_parity(4);
}

TEST_CASE("W2A2 aux+SAT: integer engine == CPU integer reference layer by layer; agrees with fake-quant" *
          doctest::test_suite("int")) {
  check_parity(2);
}

TEST_CASE("integer dot-product path: engine == CPU integer reference layer by layer (untrained, W4A4 and W8A8)" *
          doctest::test_suite("int")) {
  if (test::lacks_integer_dot_product()) return;
  const fs::path dir = temp_dir("dot");
  for (int bits : {4, 8}) {
    quant::QuantConfig q;
    q.wbits = q.abits = bits;
    q.sat = true;
    const fs::path ckpt = init_checkpoint(dir / ("q" + std::to_string(bits) + ".safetensors"), 4, &q);
    const quant::IntModel m = quant::export_int_model(ckpt.string());
    const int n = 3;
    std::vector<uint8_t> px(size_t(n) * m.model.in_channels * m.model.height * m.model.width_px);
    std::mt19937 rng{uint32_t(bits)};
    for (auto& v : px) v = uint8_t(rng() % 256);
    quant::IntEngine engine(test::ctx(), m, n, quant::IntConvPath::Dot);
    const std::vector<float> logits = engine.run(px, n);
    const quant::ref::IntTrace want = quant::ref::int_forward(m, px, n);
    const auto got = engine.layer_outputs(n);
    REQUIRE(got.size() == want.layers.size());
    for (size_t i = 0; i < got.size(); ++i) {
      INFO("W" << bits << "A" << bits << " layer " << want.layers[i].first);
      CHECK(got[i].second == want.layers[i].second);
    }
    CHECK(logits == want.logits);
    // The comparison means something: the layers carry varied codes.
    const auto& mid = want.layers[want.layers.size() / 2].second;
    CHECK(std::set<int32_t>(mid.begin(), mid.end()).size() >= 3);
  }
  fs::remove_all(dir);
}

TEST_CASE("integer model files: round trip and size vs the FP32 checkpoint (width 16)" * doctest::test_suite("int")) {
  const fs::path dir = temp_dir("size");
  const auto fp32_bytes = fs::file_size(init_checkpoint(dir / "fp32.safetensors", 16, nullptr));
  for (int bits : {4, 2}) {
    quant::QuantConfig q;
    q.wbits = q.abits = bits;
    q.sat = true;
    const fs::path ckpt = init_checkpoint(dir / ("q" + std::to_string(bits) + ".safetensors"), 16, &q);
    const fs::path out = dir / ("int" + std::to_string(bits) + ".safetensors");
    const quant::IntModel m = quant::export_int_model(ckpt.string());
    quant::write_int_model(out.string(), m);
    const quant::IntModel back = quant::read_int_model(out.string());
    REQUIRE(back.nodes.size() == m.nodes.size());
    for (size_t i = 0; i < m.nodes.size(); ++i) {
      const quant::IntNode &a = back.nodes[i], &b = m.nodes[i];
      INFO(b.name);
      CHECK(a.name == b.name);
      CHECK(a.inputs == b.inputs);
      CHECK(a.mode == b.mode);
      CHECK(a.conv.codes == b.conv.codes);
      CHECK(a.conv.rq.mult == b.conv.rq.mult);
      CHECK(a.conv.rq.mult2 == b.conv.rq.mult2);
      CHECK(a.conv.rq.shift == b.conv.rq.shift);
      CHECK(a.conv.rq.bias == b.conv.rq.bias);
      CHECK((a.mult == b.mult && a.shift == b.shift && a.bias == b.bias && a.logit_scale == b.logit_scale));
      CHECK((a.c == b.c && a.h == b.h && a.w == b.w));
    }
    const double ratio = double(fs::file_size(out)) / double(fp32_bytes);
    MESSAGE(bits << "-bit model: " << fs::file_size(out) << " bytes, FP32 checkpoint " << fp32_bytes << " (ratio 1/"
                 << 1 / ratio << ")");
    CHECK(ratio <= (bits == 4 ? 1.0 / 6 : 1.0 / 10));
  }
  fs::remove_all(dir);
}

TEST_CASE("bad inputs: FP32 / unsupported checkpoints, corrupt model files, shape mismatch" *
          doctest::test_suite("int")) {
  const fs::path dir = temp_dir("bad");
  const fs::path fp32 = init_checkpoint(dir / "fp32.safetensors", 4, nullptr);
  CHECK_THROWS_WITH_AS(quant::export_int_model(fp32.string()), doctest::Contains("was not trained quantized"), Error);
  quant::QuantConfig lsq;
  lsq.apply_preset("lsq", "", "");
  lsq.wbits = lsq.abits = 4;
  const fs::path lsq_ckpt = init_checkpoint(dir / "lsq.safetensors", 4, &lsq);
  CHECK_THROWS_WITH_AS(quant::export_int_model(lsq_ckpt.string()), doctest::Contains("lsq is not supported"), Error);
  quant::QuantConfig w_only;
  w_only.wbits = 4;  // activations left in FP32
  const fs::path w_ckpt = init_checkpoint(dir / "wonly.safetensors", 4, &w_only);
  CHECK_THROWS_WITH_AS(quant::export_int_model(w_ckpt.string()), doctest::Contains("not quantized"), Error);

  quant::QuantConfig q;
  q.wbits = q.abits = 4;
  const fs::path good = dir / "int.safetensors";
  quant::write_int_model(good.string(), quant::export_int_model(init_checkpoint(dir / "q.safetensors", 4, &q).string()));
  // A training checkpoint is not a model file.
  CHECK_THROWS_WITH_AS(quant::read_int_model(fp32.string()), doctest::Contains("not a vkqat integer model"), Error);
  // Truncated and garbage files.
  std::string bytes;
  {
    std::ifstream in(good, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  const fs::path cut = dir / "cut.safetensors", junk = dir / "junk.safetensors";
  std::ofstream(cut, std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  std::ofstream(junk, std::ios::binary) << std::string(4096, '\x7f');
  CHECK_THROWS_AS(quant::read_int_model(cut.string()), Error);
  CHECK_THROWS_AS(quant::read_int_model(junk.string()), Error);
  // A tensor of the wrong shape (rewritten file: valid safetensors, wrong content).
  nn::SafeTensors st = nn::read_safetensors(good.string());
  st.tensors["layer1.0.conv1.requant.shift"].shape = {2};
  st.tensors["layer1.0.conv1.requant.shift"].data.resize(8);
  const fs::path wrong = dir / "wrong.safetensors";
  nn::write_safetensors(wrong.string(), st);
  CHECK_THROWS_WITH_AS(quant::read_int_model(wrong.string()), doctest::Contains("layer1.0.conv1.requant.shift"), Error);
  // A vkqat-int-1 file (the ResNet-only layout) asks for a re-export; a graph whose layer
  // reads a later one is refused naming the layer.
  auto rewrite_meta = [&](const std::function<void(nlohmann::json&)>& edit, const fs::path& out) {
    nn::SafeTensors t = nn::read_safetensors(good.string());
    nlohmann::json meta = nlohmann::json::parse(t.metadata["vkqat_int"]);
    edit(meta);
    t.metadata["vkqat_int"] = meta.dump();
    nn::write_safetensors(out.string(), t);
    return out.string();
  };
  CHECK_THROWS_WITH_AS(
      quant::read_int_model(rewrite_meta([](nlohmann::json& j) { j["format"] = "vkqat-int-1"; }, dir / "v1.safetensors")),
      doctest::Contains("re-export"), Error);
  CHECK_THROWS_WITH_AS(quant::read_int_model(rewrite_meta(
                           [](nlohmann::json& j) { j["graph"][2]["inputs"] = {"fc.act", "conv1"}; }, dir / "fwd.safetensors")),
                       doctest::Contains("is not an earlier layer"), Error);
  CHECK_THROWS_WITH_AS(quant::read_int_model(rewrite_meta(
                           [](nlohmann::json& j) { j["graph"][1]["groups"] = 2; }, dir / "groups.safetensors")),
                       doctest::Contains("layer 'layer1.0.conv1' (conv): groups 2"), Error);
  CHECK_THROWS_WITH_AS(quant::read_int_model(rewrite_meta(
                           [](nlohmann::json& j) { j["graph"][1]["op"] = "softmax"; }, dir / "op.safetensors")),
                       doctest::Contains("unknown op 'softmax'"), Error);
  // Signed (offset) codes: the offset must be levels / 2, and only convs read them; a
  // vkqat-int-2 file (no offsets) still reads, as the same model.
  CHECK_THROWS_WITH_AS(quant::read_int_model(rewrite_meta(
                           [](nlohmann::json& j) { j["graph"][1]["offset"] = 5; }, dir / "offset.safetensors")),
                       doctest::Contains("layer 'layer1.0.conv1' (conv): output offset 5 (0, or levels / 2"), Error);
  CHECK_THROWS_WITH_AS(quant::read_int_model(rewrite_meta(
                           [](nlohmann::json& j) {
                             for (auto& pool : j["graph"])
                               if (pool["op"] == "avgpool")
                                 for (auto& l : j["graph"])
                                   if (l["name"] == pool["inputs"][0]) l["levels"] = 14, l["offset"] = 7;
                           },
                           dir / "signed-pool.safetensors")),
                       doctest::Contains("(avgpool): reads signed (offset) codes"), Error);
  const std::string v2 = rewrite_meta(
      [](nlohmann::json& j) {
        j["format"] = "vkqat-int-2";
        for (auto& l : j["graph"]) l.erase("offset");
      },
      dir / "v2.safetensors");
  const quant::IntModel from_v2 = quant::read_int_model(v2), from_v3 = quant::read_int_model(good.string());
  REQUIRE(from_v2.nodes.size() == from_v3.nodes.size());
  for (size_t i = 0; i < from_v2.nodes.size(); ++i)
    CHECK((from_v2.nodes[i].offset == 0 && from_v2.nodes[i].conv.codes == from_v3.nodes[i].conv.codes));
  // Model / data shape mismatch.
  const quant::IntModel m = quant::read_int_model(good.string());
  nn::Dataset cifar_like;
  cifar_like.n = 1, cifar_like.channels = 3, cifar_like.height = cifar_like.width = 32, cifar_like.classes = 10;
  cifar_like.name = "cifar10";
  CHECK_THROWS_WITH_AS(quant::check_int_model_data(m, cifar_like, good.string()), doctest::Contains("expects 1x28x28"),
                       Error);
  quant::IntEngine engine(test::ctx(), m, 2);
  CHECK_THROWS_AS(engine.run(std::vector<uint8_t>(100), 1), Error);
  fs::remove_all(dir);
}

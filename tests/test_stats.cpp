// Training statistics (src/quant/stats.*): the two stats shaders against CPU references,
// the collector's histograms / level occupancy / clip counts exactly against CPU counts of
// the downloaded tensors, SAT's last-layer numbers, the stats file round trip and its
// errors, and Trainer hooks + reconfigure (bits and SAT changed mid-run keep alphas).
#include <cmath>
#include <filesystem>
#include <fstream>
#include <unistd.h>

#include "backend/error.h"
#include "nn/model/network.h"
#include "nn/ops/reduce.h"
#include "nn/train/trainer.h"
#include "quant/dorefa.h"
#include "quant/pact.h"
#include "quant/policy.h"
#include "quant/stats.h"
#include "quant/stats_file.h"
#include "testutil.h"

using namespace vkqat;
namespace fs = std::filesystem;

namespace {
fs::path temp_dir(const std::string& name) {
  fs::path p = fs::temp_directory_path() / ("vkqat-test-stats-" + name + "-" + std::to_string(::getpid()));
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

const std::vector<float>* find_tensor(nn::Network& net, const std::string& name, std::vector<float>& store) {
  for (const auto& [n, t] : net.state())
    if (n == name) return &(store = t->download());
  return nullptr;
}

// A small W2A2 CG-PACT + SAT ResNet-20 after one training-mode forward of random images.
struct SmallNet {
  std::unique_ptr<nn::Network> net;
  explicit SmallNet(int batch) {
    nn::ModelConfig mc;
    mc.width = 4, mc.height = 8, mc.width_px = 8, mc.in_channels = 1, mc.classes = 10;
    net = nn::build_network(test::ctx(), mc, batch);
    net->init(3);
    quant::QuantConfig qc;
    qc.wbits = 2, qc.abits = 2, qc.sat = true;
    net->apply_quant_policy(*quant::make_quant_policy(qc));
    net->input().upload(test::random_vector(size_t(net->input().numel()), 11, -2.f, 2.f));
    Recording rec(test::ctx());
    net->forward(rec, true);
    rec.run();
  }
};
}  // namespace

TEST_CASE("stats_clip counts x >= threshold and x < 0 exactly" * doctest::test_suite("stats")) {
  Context& ctx = test::ctx();
  for (int n : {1, 3, 4, 7, 1000, 100003}) {
    std::vector<float> x = test::random_vector(size_t(n), uint32_t(n), -3.f, 5.f);
    if (n > 4) x[2] = 2.5f;  // exactly the threshold counts as clipped
    nn::Tensor tx(ctx, {n}), th(ctx, {1}), counts(ctx, {2}, nn::DType::U32);
    tx.upload(x);
    th.upload({2.5f});
    Recording rec(ctx);
    rec.fill(counts.view(), 0);
    quant::record_clip_counts(rec, tx, th, counts);
    rec.finish();
    rec.run();
    CHECK_MESSAGE(counts.download_u32() == quant::ref::clip_counts(x, 2.5f), "n = " << n);
  }
  nn::Tensor x(ctx, {8}), th(ctx, {1}), bad(ctx, {3}, nn::DType::U32);
  Recording rec(ctx);
  CHECK_THROWS_AS(quant::record_clip_counts(rec, x, th, bad), Error);
}

TEST_CASE("stats_logits: max logit and max softmax probability per row" * doctest::test_suite("stats")) {
  Context& ctx = test::ctx();
  for (auto [rows, classes] : {std::pair{1, 2}, {5, 10}, {130, 3}}) {
    std::vector<float> l = test::random_vector(size_t(rows) * classes, uint32_t(rows), -20.f, 20.f);
    nn::Tensor tl(ctx, {rows, classes}), out(ctx, {rows, 2});
    tl.upload(l);
    Recording rec(ctx);
    quant::record_logit_stats(rec, tl, out);
    rec.finish();
    rec.run();
    std::vector<double> want = quant::ref::logit_stats(l, rows, classes);
    test::check_close(out.download(), std::vector<float>(want.begin(), want.end()), 1e-5, 1e-7, "logit stats");
  }
  nn::Tensor l(ctx, {4, 3}), out(ctx, {3, 2});
  Recording rec(ctx);
  CHECK_THROWS_AS(quant::record_logit_stats(rec, l, out), Error);
}

TEST_CASE("collector: histograms, level occupancy and clip counts equal CPU counts" * doctest::test_suite("stats")) {
  SmallNet s(3);
  quant::StatsCollector collector(test::ctx(), *s.net);
  quant::StatsSnapshot snap = collector.collect();
  REQUIRE(snap.weights.size() == 22);  // stem, 9 blocks x 2 convs, 2 downsamples, fc
  for (const quant::WeightStats& w : snap.weights) {
    std::vector<float> store;
    const std::vector<float>* values = find_tensor(*s.net, w.name + ".weight", store);
    REQUIRE_MESSAGE(values, w.name);
    CHECK(w.max_abs == doctest::Approx(nn::ref::reduce_max_abs(*values, {int(values->size())})[0]));
    CHECK(w.var == doctest::Approx(nn::ref::reduce_var(*values, {int(values->size())})[0]).epsilon(1e-4));
    CHECK_MESSAGE(w.hist == nn::ref::histogram(*values, quant::kStatsBins, -w.max_abs, w.max_abs), w.name);
    // 2-bit middle layers, 8-bit stem and fc (edge bits): 4 or 256 levels, counted exactly.
    const int bits = w.name == "conv1" || w.name == "fc" ? 8 : 2;
    REQUIRE_MESSAGE(w.bits == bits, w.name << ": " << w.quantizer);
    const float stat = quant::ref::dorefa_weight_stat(*values, bits);
    const quant::ref::Quantized q = quant::ref::dorefa_weight_forward(*values, stat, bits);
    std::vector<uint32_t> occupancy(size_t(1) << bits, 0);
    for (float r : q.r) ++occupancy.at(size_t(quant::round_half_away(r)));
    CHECK_MESSAGE(w.occupancy == occupancy, w.name);
    CHECK(w.level_centres().size() == occupancy.size());
    CHECK(w.level_centres().back() == doctest::Approx(w.max_abs).epsilon(1e-4));
  }
  REQUIRE(snap.acts.size() == 20);  // conv1.act, 9 x (act1, act2), fc.act
  // What the collector reads is each site's input (QuantSites); that these are the right
  // tensors is checked here from their values: the stem's and layer1.0's BN outputs before
  // the quantizer (batch statistics at the initial gamma 1, beta 0: per channel mean 0,
  // variance 1), layer2.0's residual sum of two such outputs (mean 0, negative values) and
  // the pooled FC input, by shape.
  const std::map<std::string, std::vector<int>> shapes = {
      {"conv1.act", {3, 4, 8, 8}}, {"layer1.0.act1", {3, 4, 8, 8}}, {"layer2.0.act2", {3, 8, 4, 4}}, {"fc.act", {3, 16}}};
  std::map<std::string, const nn::Tensor*> inputs;
  for (const nn::ActSite& site : s.net->quant_sites().acts)
    if (shapes.count(site.name)) inputs[site.name] = site.input;
  for (const auto& [name, shape] : shapes) {
    CAPTURE(name);
    REQUIRE(inputs.count(name));
    REQUIRE(inputs[name]->defined());
    CHECK(inputs[name]->shape() == shape);
    if (shape.size() != 4) continue;
    const std::vector<float> x = inputs[name]->download();
    const size_t c_n = size_t(shape[1]), hw = size_t(shape[2] * shape[3]), n = size_t(shape[0]);
    for (size_t c = 0; c < c_n; ++c) {
      double sum = 0, sq = 0;
      for (size_t b = 0; b < n; ++b)
        for (size_t i = 0; i < hw; ++i) {
          const double v = x[(b * c_n + c) * hw + i];
          sum += v, sq += v * v;
        }
      const double mean = sum / double(n * hw);
      CHECK(std::fabs(mean) < 1e-4);
      if (name != "layer2.0.act2") CHECK(sq / double(n * hw) - mean * mean == doctest::Approx(1.0).epsilon(1e-2));
    }
  }
  int checked = 0;
  for (const quant::ActStats& a : snap.acts) {
    if (!inputs.count(a.name)) continue;
    ++checked;
    const std::vector<float> x = inputs[a.name]->download();
    CHECK(a.alpha == (a.name == "fc.act" ? quant::kPactAlphaFc : quant::kPactAlphaConv));
    CHECK(a.hi == -a.lo);
    CHECK_MESSAGE(a.hist == nn::ref::histogram(x, quant::kStatsBins, a.lo, a.hi), a.name);
    const std::vector<uint32_t> clip = quant::ref::clip_counts(x, a.alpha);
    CHECK(a.above_alpha == clip[0]);
    CHECK(a.below_zero == clip[1]);
    if (a.name != "fc.act") CHECK(a.below_zero > 0);  // the pooled input of fc is >= 0
  }
  CHECK(checked == 4);
  const quant::LastLayerStats& L = snap.last;
  CHECK(L.sat);
  CHECK(L.n_out == 10);
  CHECK(L.n_var_effective == doctest::Approx(1.0).epsilon(1e-4));  // SAT: n Var[W*] = 1
  CHECK(L.n_out * L.var_sat == doctest::Approx(1.0).epsilon(1e-6));
  CHECK(L.n_out * L.var_plain > 1.0);  // DoReFa's +-1 levels inflate the scale
  CHECK(L.mean_max_prob > 0.1 - 1e-6);
  CHECK(L.mean_max_prob <= 1.0);

  // JSON round trip keeps everything the viewer reads.
  quant::StatsSnapshot back = quant::StatsSnapshot::from_json(nlohmann::json::parse(snap.to_json().dump()));
  CHECK(back.weights[5].hist == snap.weights[5].hist);
  CHECK(back.weights[5].occupancy == snap.weights[5].occupancy);
  CHECK(back.acts[0].above_alpha == snap.acts[0].above_alpha);
  CHECK(back.last.var_plain == doctest::Approx(L.var_plain));
}

TEST_CASE("weight quantizers say what they are: method, bits, SAT" * doctest::test_suite("stats")) {
  Context& ctx = test::ctx();
  nn::Tensor w(ctx, {4, 3, 3, 3});
  w.upload(test::random_vector(108, 5));
  quant::QuantConfig q;
  q.wbits = 2;
  q.abits = 2;
  q.sat = true;
  auto policy = quant::make_quant_policy(q);
  auto conv = policy->weight(ctx, "layer1.0.conv1", w, nn::LayerRole::Middle);
  CHECK(conv->kind().method == "dorefa");
  CHECK(conv->kind().bits == 2);
  CHECK_FALSE(conv->kind().sat);
  CHECK(conv->describe() == "dorefa 2-bit");
  nn::Tensor fc_w(ctx, {10, 16});
  fc_w.upload(test::random_vector(160, 6));
  auto fc = policy->weight(ctx, "fc", fc_w, nn::LayerRole::Last);  // --edge-bits 8, + SAT
  CHECK(fc->kind().bits == 8);
  CHECK(fc->kind().sat);
  CHECK(fc->describe() == "dorefa 8-bit + sat");
  quant::QuantConfig sat_only;
  sat_only.sat = true;
  auto fp = quant::make_quant_policy(sat_only)->weight(ctx, "fc", fc_w, nn::LayerRole::Last);
  CHECK(fp->describe() == "fp32 + sat");
}

TEST_CASE("stats file: records round-trip; bad files give clear errors" * doctest::test_suite("stats")) {
  fs::path dir = temp_dir("file");
  SmallNet s(2);
  quant::StatsCollector collector(test::ctx(), *s.net);
  quant::StatsSnapshot snap = collector.collect();
  {
    quant::StatsWriter w(dir.string());
    for (int64_t step : {50, 100, 150}) {
      snap.step = step;
      w.write(snap);
    }
  }
  std::vector<quant::StatsSnapshot> back = quant::read_stats_file(dir.string());
  REQUIRE(back.size() == 3);
  CHECK(back[2].step == 150);
  CHECK(back[1].weights[3].hist == snap.weights[3].hist);
  CHECK(back[1].acts[2].hist == snap.acts[2].hist);
  quant::truncate_stats_file_after(dir.string(), 100);
  CHECK(quant::read_stats_file(dir.string()).size() == 2);
  { quant::StatsWriter again(dir.string()); }  // reopening appends after a valid file
  CHECK(quant::read_stats_file(dir.string()).size() == 2);

  const fs::path file = dir / quant::kStatsFileName;
  const auto size = fs::file_size(file);
  auto expect_error = [&](const std::string& what) {
    try {
      quant::read_stats_file(dir.string());
      FAIL("no error for " << what);
    } catch (const Error& e) {
      CHECK_MESSAGE(std::string(e.what()).find(what) != std::string::npos, e.what());
    }
  };
  fs::resize_file(file, size - 7);  // cut inside the last record
  expect_error("corrupt record");
  {
    std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(20);  // inside the first record's CBOR
    f.write("\xff\xff\xff\xff", 4);
  }
  fs::resize_file(file, size);
  expect_error("record at byte 16");
  {
    std::ofstream f(file, std::ios::binary | std::ios::trunc);
    f << "not a stats file at all";
  }
  expect_error("bad header");
  CHECK_THROWS_AS(quant::StatsWriter(dir.string()), Error);  // never appends to a bad file
  expect_error("bad header");
  CHECK_THROWS_WITH_AS(quant::read_stats_file((dir / "missing").string()), doctest::Contains("cannot open"), Error);
  fs::remove_all(dir);
}

namespace {
// Switches W4A4 to W2A2 + SAT after two steps and records what it saw.
struct SwitchBits : nn::TrainHooks {
  std::vector<float> alpha_before, alpha_after;
  std::vector<double> losses;
  int steps = 0;
  bool before_step(nn::Trainer& t) override {
    if (steps == 2) {
      std::vector<float> store;
      alpha_before = *find_tensor(t.network(), "layer1.0.act1.alpha", store);
      nn::TrainConfig next = t.config();
      quant::QuantConfig q = quant::quant_config_from_json(next.quant);
      q.wbits = 2, q.abits = 2, q.sat = true;
      next.quant = q.to_json();
      next.wbits = next.abits = 2;
      t.reconfigure(next);
      alpha_after = *find_tensor(t.network(), "layer1.0.act1.alpha", store);
    }
    return steps < 4;  // then stop, as the visualizer's quit does
  }
  void after_step(nn::Trainer&, const nn::StepReport& r) override {
    ++steps;
    losses.push_back(r.loss);
  }
};
}  // namespace

TEST_CASE("trainer hooks: reconfigure mid-run keeps learned alphas; a hook can stop the run" *
          doctest::test_suite("stats")) {
  REQUIRE(fs::exists("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"));
  fs::path dir = temp_dir("reconf");
  nn::TrainConfig c;
  c.model.width = 4;
  c.batch = 16;
  c.train_limit = 128, c.test_limit = 64;
  c.out = dir.string();
  c.wbits = c.abits = 4;
  quant::QuantConfig q;
  q.wbits = q.abits = 4;
  c.quant = q.to_json();
  nn::Trainer tr(test::ctx(), c, quant::quant_plugins());
  SwitchBits hook;
  tr.set_hooks(&hook);
  nn::TrainSummary s = tr.run();
  CHECK(s.interrupted);
  CHECK(hook.steps == 4);
  REQUIRE(hook.alpha_before.size() == 1);
  CHECK(hook.alpha_after == hook.alpha_before);
  CHECK(hook.alpha_before[0] != quant::kPactAlphaConv);  // it was trained, not re-initialised
  CHECK(tr.network().state().size() > 0);
  CHECK(tr.config().wbits == 2);
  for (double l : hook.losses) CHECK(std::isfinite(l));
  CHECK(fs::exists(dir / "checkpoint.safetensors"));
  fs::remove_all(dir);
}

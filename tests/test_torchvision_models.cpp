// torchvision's ResNet-18/34/50 and MobileNetV2 (and MobileNetV1) as descriptions
// (nn/model/model_builders.h): torchvision's own state-dict names, shapes and order
// (tests/data/torchvision/state_dicts.json, written by scripts/torchvision_fixtures.py from
// torchvision 0.14), the stems, the aux taps, the quantization roles, and the errors for bad
// sizes; a PyTorch file without vkqat metadata gives the model's config from its shapes.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "backend/error.h"
#include "nn/model/graph_network.h"
#include "nn/model/model_builders.h"
#include "nn/train/checkpoint.h"
#include "nn/train/trainer.h"
#include "quant/policy.h"
#include "testutil.h"

using namespace vkqat;
using nlohmann::json;

namespace {

std::filesystem::path torchvision_data() {
  const char* data = std::getenv("VKQAT_TEST_DATA");
  REQUIRE(data);
  return std::filesystem::path(data) / "torchvision";
}

nn::ModelConfig config(const std::string& name, int in_channels, int side, int classes) {
  nn::ModelConfig mc;
  mc.name = name;
  mc.width = 64;
  mc.in_channels = in_channels, mc.height = side, mc.width_px = side, mc.classes = classes;
  return mc;
}

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

}  // namespace

TEST_CASE("torchvision models: the descriptions give torchvision's state dicts (names, shapes, order)") {
  std::ifstream in(torchvision_data() / "state_dicts.json");
  REQUIRE(in);
  const json tv = json::parse(in);
  for (const std::string name : {"resnet18", "resnet34", "resnet50", "mobilenet-v2"}) {
    CAPTURE(name);
    REQUIRE(tv.contains(name));
    const nn::ModelDescription d = nn::describe_model(config(name, 3, 224, 1000));
    const auto mine = nn::state_shapes(d);
    size_t k = 0;
    int64_t trainable = 0;
    for (const auto& entry : tv[name]) {
      const std::string tensor = entry[0].get<std::string>();
      const std::vector<int> shape = entry[1].get<std::vector<int>>();
      CAPTURE(tensor);
      if (ends_with(tensor, ".num_batches_tracked")) {  // written by vkqat's checkpoints per BN
        const int bn = d.index_of(tensor.substr(0, tensor.size() - std::string(".num_batches_tracked").size()));
        REQUIRE(bn >= 0);
        CHECK(d.layers[size_t(bn)].op == nn::LayerOp::BatchNorm);
        continue;
      }
      REQUIRE(k < mine.size());
      CHECK(mine[k].first == tensor);
      CHECK(mine[k].second == shape);
      if (!ends_with(tensor, ".running_mean") && !ends_with(tensor, ".running_var")) {
        int64_t n = 1;
        for (int v : shape) n *= v;
        trainable += n;
      }
      ++k;
    }
    CHECK(k == mine.size());
    CHECK(d.parameter_count() == trainable);
  }
}

TEST_CASE("torchvision models: mobilenet-v1, --width-mult, the cifar stem and the aux taps") {
  // MobileNetV1: 13 depthwise-separable blocks, 1024 (x width-mult) features into the classifier.
  for (double wm : {1.0, 0.5}) {
    nn::ModelConfig mc = config("mobilenet-v1", 1, 28, 10);
    mc.width_mult = wm;
    const nn::ModelDescription d = nn::describe_model(mc);
    int depthwise = 0;
    for (const auto& l : d.layers)
      if (l.op == nn::LayerOp::Conv && l.groups > 1) {
        CHECK(l.groups == l.out);
        CHECK(d.layers[size_t(l.input_index[0])].shape[0] == l.out);
        ++depthwise;
      }
    CHECK(depthwise == 13);
    CHECK(d.layers[size_t(d.index_of("avgpool"))].shape == std::vector<int>{int(1024 * wm)});
    CHECK(d.layers[size_t(d.index_of("features.0.0"))].shape[0] == int(32 * wm));
    CHECK(d.taps == std::vector<std::string>{"features.1.4", "features.3.4", "features.5.4", "features.11.4", "features.13.4"});
  }
  // MobileNetV2: torchvision's _make_divisible(..., 8); last_channel never below 1280.
  nn::ModelConfig v2 = config("mobilenet-v2", 1, 28, 10);
  v2.width_mult = 0.35;
  nn::ModelDescription d = nn::describe_model(v2);
  CHECK(d.layers[size_t(d.index_of("features.0.0"))].shape[0] == 16);  // 32 * 0.35 = 11.2 -> 16
  CHECK(d.layers[size_t(d.index_of("features.18.0"))].shape[0] == 1280);
  // Aux taps: every residual sum and each stage's last output.
  for (const auto& l : d.layers)
    if (l.op == nn::LayerOp::Add) CHECK(std::find(d.taps.begin(), d.taps.end(), l.name) != d.taps.end());
  CHECK(d.taps.front() == "features.1.conv.2");
  CHECK(d.taps.back() == "features.17.conv.3");
  // ResNets: every block's sum.
  nn::ModelConfig r = config("resnet50", 1, 28, 10);
  r.width = 4;
  d = nn::describe_model(r);
  CHECK(d.taps.size() == 16);
  for (const auto& t : d.taps) CHECK(d.layers[size_t(d.index_of(t))].op == nn::LayerOp::Add);
  CHECK(d.index_of("maxpool") >= 0);
  CHECK(d.layers[size_t(d.index_of("conv1"))].kernel == 7);
  r.stem = "cifar";
  d = nn::describe_model(r);
  CHECK(d.index_of("maxpool") < 0);
  CHECK(d.layers[size_t(d.index_of("conv1"))].kernel == 3);
  CHECK(d.layers[size_t(d.index_of("conv1"))].stride == 1);
  CHECK(d.layers[size_t(d.index_of("layer1.0"))].shape == std::vector<int>{16, 28, 28});
  v2.stem = "cifar";
  CHECK(nn::describe_model(v2).layers[0].stride == 1);
}

TEST_CASE("torchvision models: bad sizes get errors naming the flag or the layer") {
  nn::ModelConfig mc = config("mobilenet-v2", 1, 28, 10);
  mc.width_mult = 0;
  CHECK_THROWS_WITH(nn::describe_model(mc), doctest::Contains("--width-mult must be in (0, 16]"));
  mc.width_mult = -1;
  CHECK_THROWS_WITH(nn::describe_model(mc), doctest::Contains("--width-mult"));
  mc.width_mult = 1;
  mc.stem = "tiny";
  CHECK_THROWS_WITH(nn::describe_model(mc), doctest::Contains("--stem tiny: unknown stem"));
  // 8x8 through a 7x7/2 stem, the max pool and layer2: layer3's first conv gets 1x1.
  nn::ModelConfig small = config("resnet18", 1, 8, 10);
  CHECK_THROWS_WITH(nn::describe_model(small), doctest::Contains("layer 'layer3.0.conv1' (stride 2) gets 1x1"));
  small.stem = "cifar";
  CHECK_NOTHROW(nn::describe_model(small));
  nn::ModelConfig v1 = config("mobilenet-v1", 1, 4, 10);
  CHECK_THROWS_WITH(nn::describe_model(v1), doctest::Contains("layer 'features.4.0'"));
}

TEST_CASE("torchvision models: the policy quantizes every conv incl. depthwise at --wbits, the edges at --edge-bits") {
  quant::QuantConfig q;
  q.wbits = 4, q.abits = 4, q.edge_bits = 8;
  for (const std::string& name : nn::torchvision_model_names()) {
    CAPTURE(name);
    nn::ModelConfig mc = config(name, 1, 32, 10);  // torchvision's stem (the resnets' max pool) at 32x32
    mc.width = 4, mc.width_mult = 0.25;
    auto net = nn::build_network(test::ctx(), mc, 2);
    REQUIRE(dynamic_cast<nn::GraphNetwork*>(net.get()));
    net->apply_quant_policy(*quant::make_quant_policy(q));
    const nn::QuantSites s = net->quant_sites();
    const nn::ModelDescription& d = dynamic_cast<nn::GraphNetwork&>(*net).description();
    const std::string first = d.layers[0].name, last = d.layers.back().name;
    int convs = 0;
    for (const auto& w : s.weights) {
      CAPTURE(w.name);
      REQUIRE(w.quant);
      CHECK(w.quant->kind().bits == (w.name == first || w.name == last ? 8 : 4));
      convs += w.name != last;
    }
    int want_convs = 0;
    for (const auto& l : d.layers) want_convs += l.op == nn::LayerOp::Conv;
    CHECK(convs == want_convs);
    REQUIRE(s.classifier);
    for (const auto& a : s.acts) CHECK(a.quant);
    // Exact evaluation: every conv but the one reading the image convolves integer levels,
    // including those behind a max pool (resnets' stem) or a signed linear bottleneck.
    auto& g = dynamic_cast<nn::GraphNetwork&>(*net);
    for (const auto& l : d.layers)
      if (l.op == nn::LayerOp::Conv) {
        CAPTURE(l.name);
        CHECK(g.conv_exact_eval(l.name) == (l.name != first));
      }
  }
}

TEST_CASE("torchvision models: a PyTorch state dict gives channels, classes, width and stem from its shapes") {
  nn::ModelConfig want = config("mobilenet-v2", 1, 28, 10);
  want.width_mult = 0.35;
  nn::SafeTensors st;
  st.source = "mnv2.safetensors";
  for (const auto& [name, shape] : nn::state_shapes(nn::describe_model(want))) {
    int64_t n = 1;
    for (int v : shape) n *= v;
    st.add_f32(name, std::vector<int64_t>(shape.begin(), shape.end()), std::vector<float>(size_t(n), 0.f));
  }
  nn::ModelConfig asked = config("mobilenet-v2", 3, 28, 1000);
  const nn::ModelConfig got = nn::config_from_state_shapes(asked, st);
  CHECK(got.in_channels == 1);
  CHECK(got.classes == 10);
  // The first multiplier whose whole state dict has these shapes (0.35 and 0.33..0.37 agree).
  CHECK(nn::state_shapes(nn::describe_model(got)) == nn::state_shapes(nn::describe_model(want)));

  nn::ModelConfig r = config("resnet34", 2, 32, 7);
  r.width = 8, r.stem = "cifar";
  nn::SafeTensors rs;
  for (const auto& [name, shape] : nn::state_shapes(nn::describe_model(r))) {
    int64_t n = 1;
    for (int v : shape) n *= v;
    rs.add_f32(name, std::vector<int64_t>(shape.begin(), shape.end()), std::vector<float>(size_t(n), 0.f));
  }
  const nn::ModelConfig rg = nn::config_from_state_shapes(config("resnet34", 1, 32, 10), rs);
  CHECK(rg.width == 8);
  CHECK(rg.stem == "cifar");
  CHECK(rg.in_channels == 2);
  CHECK(rg.classes == 7);
  rs.tensors.erase("fc.weight");
  CHECK_THROWS_WITH(nn::config_from_state_shapes(config("resnet34", 1, 32, 10), rs),
                    doctest::Contains("tensor 'fc.weight' is missing"));
}

TEST_CASE("torchvision parity: PyTorch-trained ResNet-18, ResNet-50 and MobileNetV2 give PyTorch's logits and accuracy") {
  std::ifstream in(torchvision_data() / "fixtures.json");
  REQUIRE(in);
  const json manifest = json::parse(in);
  REQUIRE(manifest["models"].size() == 3);
  for (const auto& fx : manifest["models"]) {
    const std::string name = fx["name"], model = fx["model"];
    CAPTURE(name);
    const std::string file = (torchvision_data() / (name + ".safetensors")).string();
    const nn::SafeTensors st = nn::read_safetensors(file);
    REQUIRE(nn::checkpoint_metadata(st).is_null());  // a plain PyTorch file
    const nn::SafeTensors batch = nn::read_safetensors((torchvision_data() / (name + "_batch.safetensors")).string());
    const std::vector<int64_t> xs = batch.at("inputs").shape;
    REQUIRE(xs.size() == 4);
    // The config from the tensors' shapes alone (asked for 3 channels, 1000 classes, width 64).
    const nn::ModelConfig mc = nn::config_from_state_shapes(config(model, 3, int(xs[2]), 1000), st);
    CHECK(mc.in_channels == xs[1]);
    if (fx.contains("width")) CHECK(mc.width == fx["width"].get<int>());
    if (fx.contains("width_mult"))
      CHECK(nn::state_shapes(nn::describe_model(mc)).size() == st.tensors.size() - [&] {
              size_t n = 0;
              for (const auto& [k, t] : st.tensors) n += ends_with(k, ".num_batches_tracked");
              return n;
            }());
    auto net = nn::build_network(test::ctx(), mc, int(xs[0]));
    nn::load_network_state(*net, st);
    net->input().upload(batch.get_f32("inputs"));
    Recording rec(test::ctx());
    net->forward(rec, /*train=*/false);
    rec.finish();
    rec.run();
    const std::vector<float> got = net->logits().download(), want = batch.get_f32("logits");
    REQUIRE(got.size() == want.size());
    double worst = 0;
    for (size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::fabs(double(got[i]) - want[i]));
    MESSAGE(name << ": max |logit - PyTorch's| = " << worst);
    CHECK(worst <= 1e-3);
    // `vkqat eval`'s path: the first SUBSET Fashion-MNIST test images, the model named only.
    nn::EvalRequest req;
    req.checkpoint = file, req.model = model, req.limit = manifest["subset"].get<int>();
    const nn::EvalResult r = nn::evaluate_checkpoint(test::ctx(), req);
    CHECK(int(std::lround(r.acc * req.limit)) == fx["pytorch_correct"].get<int>());
  }
}

TEST_CASE("torchvision models train: a few steps at a tiny size, FP32 and W4A4 CG-PACT + SAT + aux, losses finite") {
  REQUIRE_MESSAGE(std::filesystem::exists("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"),
                  "Debian package dataset-fashion-mnist is required (make test installs it)");
  for (const std::string& model : nn::torchvision_model_names())
    for (bool quantized : {false, true}) {
      CAPTURE(model);
      CAPTURE(quantized);
      nn::TrainConfig c;
      c.model.name = model;
      c.model.width = 4, c.model.width_mult = 0.25;
      c.epochs = 1, c.batch = 16, c.lr = 0.05f;
      c.train_limit = 48, c.test_limit = 16, c.log_every = 1;
      const auto dir = test::fresh_dir("tv_train_" + model + (quantized ? "_q" : ""));
      c.out = dir.string();
      if (quantized) {
        quant::QuantConfig q;
        q.wbits = q.abits = c.wbits = c.abits = 4;
        q.sat = true;
        c.quant = q.to_json();
        c.aux = true;
      }
      const nn::TrainSummary s = nn::Trainer(test::ctx(), c, quant::quant_plugins()).run();
      CHECK(std::isfinite(s.test_loss));
      std::ifstream metrics(dir / "metrics.jsonl");
      int steps = 0;
      for (std::string line; std::getline(metrics, line);) {
        const json j = json::parse(line);
        if (j.value("type", "") != "step") continue;
        CHECK(j["loss"].is_number());  // a NaN loss is written as null
        if (j["loss"].is_number()) CHECK(std::isfinite(j["loss"].get<double>()));
        ++steps;
      }
      CHECK(steps == 3);
      // The checkpoint holds each BN's num_batches_tracked (torchvision's load_state_dict wants it).
      const nn::SafeTensors ck = nn::read_safetensors((dir / "checkpoint.safetensors").string());
      CHECK(ck.has(model.rfind("resnet", 0) == 0 ? "bn1.num_batches_tracked" : "features.0.1.num_batches_tracked"));
    }
}

// The network gradient checks of these models: test_net_gradcheck_torchvision.cpp.

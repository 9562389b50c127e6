// The JSON model description (nn/model/model_desc.h): every kind of bad description gets an
// Error naming the file and the layer; shapes, parameter counts and FLOPs are inferred; the
// built-in models' descriptions give exactly the state dicts the hand-written classes gave.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <functional>

#include "backend/error.h"
#include "nn/model/graph_network.h"
#include "nn/model/model_builders.h"
#include "nn/model/model_desc.h"
#include "nn/model/network.h"
#include "testutil.h"

using namespace vkqat;
using nlohmann::json;

namespace {

// A valid little net with a residual block and a depthwise conv, the base every bad case edits.
json base_description() {
  return json::parse(R"({
    "input": {"channels": 2, "height": 8, "width": 8}, "classes": 3,
    "layers": [
      {"name": "conv1", "op": "conv", "out": 4, "kernel": 3, "padding": 1},
      {"name": "bn1", "op": "batchnorm"},
      {"name": "act1", "op": "relu"},
      {"name": "dw", "op": "conv", "out": 4, "kernel": 3, "padding": 1, "groups": 4},
      {"name": "bn2", "op": "batchnorm"},
      {"name": "sum", "op": "add", "inputs": ["bn2", "act1"]},
      {"name": "act2", "op": "relu"},
      {"name": "pool", "op": "gavgpool"},
      {"name": "fc", "op": "linear", "out": 3}
    ]})");
}

// The description edited by `edit` must fail with a message containing every piece of `want`.
void expect_error(const std::function<void(json&)>& edit, const std::vector<std::string>& want) {
  json j = base_description();
  edit(j);
  CAPTURE(j.dump());
  try {
    nn::parse_model_description(j, "bad.json");
    FAIL("no error");
  } catch (const Error& e) {
    const std::string msg = e.what();
    CAPTURE(msg);
    CHECK(msg.find("bad.json") != std::string::npos);
    for (const auto& w : want) CHECK_MESSAGE(msg.find(w) != std::string::npos, w);
  }
}

json& layer(json& j, const std::string& name) {
  for (auto& l : j["layers"])
    if (l["name"] == name) return l;
  throw std::runtime_error("test: no layer " + name);
}

}  // namespace

TEST_CASE("a model description: shapes, parameters and FLOPs inferred per layer") {
  const nn::ModelDescription d = nn::parse_model_description(base_description(), "ok.json");
  REQUIRE(d.layers.size() == 9);
  CHECK(d.layers[0].shape == std::vector<int>{4, 8, 8});
  CHECK(d.layers[0].params == 4 * 2 * 9);
  CHECK(d.layers[0].flops == doctest::Approx(2.0 * 4 * 64 * 2 * 9));
  CHECK(d.layers[3].params == 4 * 1 * 9);  // depthwise: one 3x3 filter per channel
  CHECK(d.layers[5].input_index == std::vector<int>{4, 2});
  CHECK(d.layers[7].shape == std::vector<int>{4});
  CHECK(d.layers[8].params == 4 * 3 + 3);
  CHECK(d.parameter_count() == 72 + 8 + 36 + 8 + 15);
  // Inputs default to the previous layer; the JSON form parses back to the same net.
  CHECK(d.layers[1].inputs == std::vector<std::string>{"conv1"});
  const nn::ModelDescription again = nn::parse_model_description(d.to_json(), "again");
  REQUIRE(again.layers.size() == d.layers.size());
  for (size_t i = 0; i < d.layers.size(); ++i) CHECK(again.layers[i].shape == d.layers[i].shape);
  // Max pool with PyTorch's floor rule and padding; stride defaults to the kernel.
  json j = base_description();
  j["layers"].insert(j["layers"].begin() + 7, json{{"name", "mp"}, {"op", "maxpool"}, {"kernel", 3}, {"padding", 1}});
  const nn::ModelDescription m = nn::parse_model_description(j, "mp.json");
  CHECK(m.layers[7].shape == std::vector<int>{4, 3, 3});  // (8 + 2 - 3) / 3 + 1
}

TEST_CASE("bad model descriptions: an Error naming the file and the layer") {
  expect_error([](json& j) { layer(j, "bn1")["op"] = "batchnrom"; }, {"'bn1'", "unknown op 'batchnrom'"});
  expect_error([](json& j) { layer(j, "sum")["inputs"] = {"bn2", "nowhere"}; }, {"'sum'", "'nowhere' names no layer"});
  expect_error([](json& j) { layer(j, "conv1")["inputs"] = {"act2"}; }, {"'conv1'", "later layer"});
  expect_error([](json& j) { layer(j, "sum")["inputs"] = {"sum", "act1"}; }, {"'sum'", "cycle"});
  expect_error([](json& j) { layer(j, "dw")["stride"] = 2; }, {"'sum'", "shapes differ"});
  expect_error([](json& j) { layer(j, "pool")["op"] = "relu"; }, {"'fc'", "flatten or gavgpool"});
  expect_error([](json& j) { layer(j, "bn2")["name"] = "bn1"; layer(j, "sum")["inputs"] = {"bn1", "act1"}; },
               {"'bn1'", "duplicate name"});
  expect_error([](json& j) { layer(j, "dw")["groups"] = 3; }, {"'dw'", "groups 3 must divide"});
  expect_error([](json& j) { layer(j, "conv1")["out"] = 7e73; }, {"'conv1'", "'out' must be an integer"});
  expect_error([](json& j) { layer(j, "conv1")["out"] = 12345678901LL; }, {"'conv1'", "out of range"});
  expect_error([](json& j) { layer(j, "conv1")["kernel"] = "3"; }, {"'conv1'", "'kernel' must be an integer"});
  expect_error([](json& j) { layer(j, "conv1")["kernel"] = 0; }, {"'conv1'", "'kernel' must be in"});
  expect_error([](json& j) { layer(j, "conv1")["kernel"] = 11; }, {"'conv1'", "bigger than the padded input"});
  expect_error([](json& j) { layer(j, "conv1")["strid"] = 2; }, {"'conv1'", "unknown attribute 'strid'"});
  expect_error([](json& j) { layer(j, "conv1").erase("out"); }, {"'conv1'", "'out' is missing"});
  expect_error([](json& j) { layer(j, "conv1")["bias"] = 1; }, {"'conv1'", "true or false"});
  expect_error([](json& j) { layer(j, "sum")["inputs"] = {"bn2"}; }, {"'sum'", "takes 2 input"});
  expect_error([](json& j) { j["layers"].insert(j["layers"].begin() + 1, json{{"name", "d"}, {"op", "dropout"}, {"p", 1.5}}); },
               {"'d'", "'p' must be in [0, 1)"});
  expect_error([](json& j) { j["layers"] = json::array(); }, {"no layers"});
  expect_error([](json& j) { layer(j, "sum")["inputs"] = {"bn2", "bn2"}; layer(j, "dw")["inputs"] = {"bn1"}; },
               {"'act1'", "used by no later layer"});
  expect_error([](json& j) { layer(j, "fc")["out"] = 4; }, {"'fc'", "not [classes] = [3]"});
  expect_error([](json& j) { j["layers"].erase(8); }, {"'pool'", "not [classes]"});
  expect_error([](json& j) { j["classes"] = 7.5; }, {"'classes' must be an integer"});
  expect_error([](json& j) { j["input"]["height"] = -1; }, {"out of range"});
  expect_error([](json& j) { j["taps"] = {"pool"}; }, {"tap 'pool'", "not a [C,H,W]"});
  expect_error([](json& j) { j["taps"] = {"nope"}; }, {"tap 'nope'"});
  expect_error([](json& j) { j["layerz"] = 1; }, {"unknown field 'layerz'"});
  expect_error([](json& j) { layer(j, "bn1")["name"] = 5; }, {"layer #1", "'name' must be a string"});
  expect_error([](json& j) { layer(j, "bn1")["name"] = "input"; layer(j, "act1")["inputs"] = {"bn1"}; }, {"'input'"});
}

TEST_CASE("load_model_description: unreadable and non-JSON files are named") {
  const auto dir = test::fresh_dir("model_desc");
  std::filesystem::create_directories(dir);
  CHECK_THROWS_WITH(nn::load_model_description((dir / "missing.json").string()),
                    doctest::Contains("missing.json: cannot open"));
  std::ofstream((dir / "broken.json").string()) << "{\"input\": ";
  CHECK_THROWS_WITH(nn::load_model_description((dir / "broken.json").string()),
                    doctest::Contains("broken.json: not valid JSON"));
  const char* data = std::getenv("VKQAT_TEST_DATA");
  REQUIRE(data);
  const auto example = (std::filesystem::path(data) / ".." / ".." / "models" / "tiny-dw-residual.json").lexically_normal();
  const nn::ModelDescription d = nn::load_model_description(example.string());
  CHECK(d.layers.back().shape == std::vector<int>{d.classes});
}

// tests/data/hand-written/state_dicts.json: the state dicts (names, shapes, order) and parameter
// counts of the hand-written classes the built-in models were before they became descriptions
// (written by them, width 4, 3x12x10 images, 7 classes): checkpoints written then load now.
TEST_CASE("built-in model descriptions give the hand-written classes' state dicts (names, shapes, order)") {
  const char* data = std::getenv("VKQAT_TEST_DATA");
  REQUIRE(data);
  std::ifstream in(std::filesystem::path(data) / "hand-written" / "state_dicts.json");
  REQUIRE(in);
  const json stored = json::parse(in);
  int models = 0;
  for (const std::string& name : nn::model_names()) {
    if (nn::is_torchvision_model(name)) continue;  // never hand-written (test_torchvision_models.cpp)
    CAPTURE(name);
    REQUIRE(stored.contains(name));
    ++models;
    const json& want = stored[name]["state"];
    nn::ModelConfig mc;
    mc.name = name;
    mc.width = 4;
    mc.in_channels = 3, mc.height = 12, mc.width_px = 10, mc.classes = 7;
    const auto desc_state = nn::state_shapes(nn::describe_model(mc));
    auto net = nn::build_network(test::ctx(), mc, 2);
    const auto& state = net->state();
    REQUIRE(desc_state.size() == want.size());
    REQUIRE(state.size() == want.size());
    for (size_t i = 0; i < state.size(); ++i) {
      CAPTURE(i);
      const std::string want_name = want[i][0];
      const std::vector<int> want_shape = want[i][1];
      CHECK(desc_state[i].first == want_name);
      CHECK(desc_state[i].second == want_shape);
      CHECK(state[i].first == want_name);
      CHECK(state[i].second->shape() == want_shape);
    }
    CHECK(nn::describe_model(mc).parameter_count() == stored[name]["parameter_count"].get<int64_t>());
    CHECK(int64_t(net->parameter_count()) == stored[name]["parameter_count"].get<int64_t>());
  }
  CHECK(models == int(stored.size()));
  nn::ModelConfig bad;
  bad.name = "resnet21";
  CHECK_THROWS_WITH(nn::describe_model(bad), doctest::Contains("unknown model"));
}

TEST_CASE("a model file in the model config: stored in checkpoints, rebuilt by build_network, checked against the data") {
  const auto dir = test::fresh_dir("model_file_config");
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "net.json").string();
  std::ofstream(path) << base_description().dump();
  nn::ModelConfig mc;
  mc.name = nn::kModelFileName;
  mc.model_file = path;
  mc.in_channels = 2, mc.height = 8, mc.width_px = 8, mc.classes = 3;
  const nn::ModelConfig back = nn::ModelConfig::from_json(mc.to_json());
  CHECK(back.model_file == path);
  CHECK(nn::ModelConfig::from_json(nn::ModelConfig{}.to_json()).model_file.empty());  // built-ins: no field
  auto net = nn::build_network(test::ctx(), back, 2);
  CHECK(net->state().size() == nn::state_shapes(nn::load_model_description(path)).size());
  CHECK(net->has_residual_blocks());
  mc.classes = 10;  // the data has other classes than the description
  CHECK_THROWS_WITH(nn::build_network(test::ctx(), mc, 2),
                    doctest::Contains((path + ": takes [2,8,8] images and 3 classes, the data has [2,8,8] and 10").c_str()));
  json bad = mc.to_json();
  bad["model_file"] = 5;
  CHECK_THROWS_WITH(nn::ModelConfig::from_json(bad), doctest::Contains("'model_file' must be a string"));
}

TEST_CASE("GraphNetwork refuses, naming the layer, what it cannot run yet") {
  nn::ModelConfig mc;
  mc.in_channels = 2, mc.height = 8, mc.width_px = 8, mc.classes = 3;
  auto refused = [&](const std::function<void(json&)>& edit, const std::string& want) {
    json j = base_description();
    edit(j);
    mc.model_file = "x.json";
    const nn::ModelDescription d = nn::parse_model_description(j, "x.json");
    CHECK_THROWS_WITH(nn::GraphNetwork(test::ctx(), d, mc, 2), doctest::Contains(want.c_str()));
  };
  refused([](json& j) { layer(j, "conv1")["bias"] = true; }, "layer 'conv1' (conv): conv bias is not supported");
  refused([](json& j) { layer(j, "dw")["groups"] = 2; }, "layer 'dw' (conv): groups 2 is neither 1 nor depthwise");
}

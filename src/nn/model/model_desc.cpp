#include "nn/model/model_desc.h"

#include <fstream>
#include <set>
#include <sstream>

#include "backend/error.h"
#include "nn/json_number.h"

namespace vkqat::nn {

namespace {

struct OpInfo {
  LayerOp op;
  const char* name;
  std::vector<std::string> attributes;  // besides name, op, inputs, comment
  int inputs;                           // how many
};

const std::vector<OpInfo>& op_table() {
  static const std::vector<OpInfo> t = {
      {LayerOp::Conv, "conv", {"out", "kernel", "stride", "padding", "groups", "bias"}, 1},
      {LayerOp::BatchNorm, "batchnorm", {}, 1},
      {LayerOp::Relu, "relu", {}, 1},
      {LayerOp::Relu6, "relu6", {}, 1},
      {LayerOp::Add, "add", {}, 2},
      {LayerOp::MaxPool, "maxpool", {"kernel", "stride", "padding"}, 1},
      {LayerOp::GlobalAvgPool, "gavgpool", {}, 1},
      {LayerOp::Flatten, "flatten", {}, 1},
      {LayerOp::Linear, "linear", {"out", "bias"}, 1},
      {LayerOp::Dropout, "dropout", {"p"}, 1},
  };
  return t;
}

const OpInfo& info(LayerOp op) {
  for (const auto& i : op_table())
    if (i.op == op) return i;
  throw Error("unknown layer op");  // unreachable: every enum value is in the table
}

// Limits that keep every product below in int64 and every tensor indexable by the shaders.
constexpr int kMaxChannels = 65536, kMaxKernel = 64, kMaxStride = 64, kMaxSide = 16384, kMaxLayers = 10000;
constexpr int64_t kMaxElementsPerImage = int64_t(1) << 28;

int64_t numel(const std::vector<int>& s) {
  int64_t n = 1;
  for (int v : s) n *= v;
  return n;
}

}  // namespace

const char* layer_op_name(LayerOp op) { return info(op).name; }

std::string dims_str(const std::vector<int>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? "," : "") + std::to_string(s[i]);
  return r + "]";
}

int ModelDescription::index_of(const std::string& name) const {
  for (size_t i = 0; i < layers.size(); ++i)
    if (layers[i].name == name) return int(i);
  return -1;
}

int64_t ModelDescription::parameter_count() const {
  int64_t n = 0;
  for (const auto& l : layers) n += l.params;
  return n;
}

double ModelDescription::flops() const {
  double f = 0;
  for (const auto& l : layers) f += l.flops;
  return f;
}

nlohmann::json ModelDescription::to_json() const {
  nlohmann::json layers_j = nlohmann::json::array();
  for (const auto& l : layers) {
    nlohmann::json lj = {{"name", l.name}, {"op", layer_op_name(l.op)}, {"inputs", l.inputs}};
    switch (l.op) {
      case LayerOp::Conv:
        lj["out"] = l.out, lj["kernel"] = l.kernel, lj["stride"] = l.stride, lj["padding"] = l.padding;
        lj["groups"] = l.groups, lj["bias"] = l.bias;
        break;
      case LayerOp::MaxPool:
        lj["kernel"] = l.kernel, lj["stride"] = l.stride, lj["padding"] = l.padding;
        break;
      case LayerOp::Linear:
        lj["out"] = l.out, lj["bias"] = l.bias;
        break;
      case LayerOp::Dropout:
        lj["p"] = l.p;
        break;
      default:
        break;
    }
    layers_j.push_back(lj);
  }
  nlohmann::json j = {{"input", {{"channels", in_channels}, {"height", height}, {"width", width}}},
                      {"classes", classes},
                      {"layers", layers_j}};
  if (!taps.empty()) j["taps"] = taps;
  return j;
}

std::vector<std::pair<std::string, std::vector<int>>> state_shapes(const ModelDescription& d) {
  std::vector<std::pair<std::string, std::vector<int>>> s;
  for (const auto& l : d.layers) {
    const std::vector<int>& x = l.input_index.empty() || l.input_index[0] < 0
                                    ? std::vector<int>{d.in_channels, d.height, d.width}
                                    : d.layers[size_t(l.input_index[0])].shape;
    switch (l.op) {
      case LayerOp::Conv:
        s.push_back({l.name + ".weight", {l.out, x[0] / l.groups, l.kernel, l.kernel}});
        if (l.bias) s.push_back({l.name + ".bias", {l.out}});
        break;
      case LayerOp::BatchNorm:
        for (const char* t : {".weight", ".bias", ".running_mean", ".running_var"}) s.push_back({l.name + t, {x[0]}});
        break;
      case LayerOp::Linear:
        s.push_back({l.name + ".weight", {l.out, x[0]}});
        if (l.bias) s.push_back({l.name + ".bias", {l.out}});
        break;
      default:
        break;
    }
  }
  return s;
}

void infer_shapes(ModelDescription& d) {
  const std::string where = "model description " + d.source;
  auto fail_model = [&](const std::string& why) { throw Error(where + ": " + why); };
  auto side_ok = [](int v) { return v >= 1 && v <= kMaxSide; };
  if (d.in_channels < 1 || d.in_channels > kMaxChannels || !side_ok(d.height) || !side_ok(d.width))
    fail_model("input " + dims_str({d.in_channels, d.height, d.width}) + " is out of range (channels 1.." +
               std::to_string(kMaxChannels) + ", sides 1.." + std::to_string(kMaxSide) + ")");
  if (d.classes < 2 || d.classes > kMaxChannels) fail_model("classes must be in 2.." + std::to_string(kMaxChannels));
  if (d.layers.empty()) fail_model("no layers");
  if (d.layers.size() > size_t(kMaxLayers)) fail_model("more than " + std::to_string(kMaxLayers) + " layers");
  const std::vector<int> image{d.in_channels, d.height, d.width};
  std::set<std::string> seen;
  for (size_t li = 0; li < d.layers.size(); ++li) {
    LayerDesc& l = d.layers[li];
    const std::string op = layer_op_name(l.op);
    auto fail = [&](const std::string& why) { throw Error(where + ": layer '" + l.name + "' (" + op + "): " + why); };
    if (l.name.empty()) throw Error(where + ": layer #" + std::to_string(li) + " (" + op + ") has an empty name");
    if (l.name == "input") fail("'input' names the image; choose another name");
    if (!seen.insert(l.name).second) fail("duplicate name (an earlier layer has it)");
    if (int(l.inputs.size()) != info(l.op).inputs)
      fail("takes " + std::to_string(info(l.op).inputs) + " input(s), got " + std::to_string(l.inputs.size()));
    l.input_index.clear();
    std::vector<std::vector<int>> in;
    for (const auto& name : l.inputs) {
      if (name == "input") {
        l.input_index.push_back(-1);
        in.push_back(image);
        continue;
      }
      const int k = d.index_of(name);
      if (k < 0) fail("input '" + name + "' names no layer");
      if (k == int(li)) fail("input '" + name + "' is the layer itself (a cycle)");
      if (k > int(li)) fail("input '" + name + "' is a later layer (a cycle or forward reference; list layers in order)");
      l.input_index.push_back(k);
      in.push_back(d.layers[size_t(k)].shape);
    }
    const std::vector<int>& x = in[0];
    auto need_image_like = [&] {
      if (x.size() != 3) fail("needs a [C,H,W] input, got " + dims_str(x));
    };
    l.params = 0;
    l.flops = 0;
    switch (l.op) {
      case LayerOp::Conv: {
        need_image_like();
        const int c = x[0], h = x[1], w = x[2];
        if (l.out < 1 || l.out > kMaxChannels) fail("'out' must be in 1.." + std::to_string(kMaxChannels));
        if (l.kernel < 1 || l.kernel > kMaxKernel) fail("'kernel' must be in 1.." + std::to_string(kMaxKernel));
        if (l.stride < 1 || l.stride > kMaxStride) fail("'stride' must be in 1.." + std::to_string(kMaxStride));
        if (l.padding < 0 || l.padding > kMaxKernel) fail("'padding' must be in 0.." + std::to_string(kMaxKernel));
        if (l.groups < 1) fail("'groups' must be at least 1");
        if (c % l.groups != 0 || l.out % l.groups != 0)
          fail("groups " + std::to_string(l.groups) + " must divide the input channels (" + std::to_string(c) +
               ") and 'out' (" + std::to_string(l.out) + ")");
        if (l.kernel > h + 2 * l.padding || l.kernel > w + 2 * l.padding)
          fail("kernel " + std::to_string(l.kernel) + " is bigger than the padded input " + dims_str(x));
        const int oh = (h + 2 * l.padding - l.kernel) / l.stride + 1, ow = (w + 2 * l.padding - l.kernel) / l.stride + 1;
        l.shape = {l.out, oh, ow};
        const int64_t taps = int64_t(c / l.groups) * l.kernel * l.kernel;
        l.params = int64_t(l.out) * taps + (l.bias ? l.out : 0);
        l.flops = 2.0 * double(numel(l.shape)) * double(taps);
        break;
      }
      case LayerOp::BatchNorm:
        need_image_like();
        l.shape = x;
        l.params = 2 * int64_t(x[0]);
        l.flops = 2.0 * double(numel(x));
        break;
      case LayerOp::Relu:
      case LayerOp::Relu6:
        l.shape = x;
        l.flops = double(numel(x));
        break;
      case LayerOp::Dropout:
        if (!(l.p >= 0.f && l.p < 1.f)) fail("'p' must be in [0, 1), got " + std::to_string(l.p));
        l.shape = x;
        l.flops = double(numel(x));
        break;
      case LayerOp::Add:
        if (in[0] != in[1])
          fail("adds '" + l.inputs[0] + "' " + dims_str(in[0]) + " and '" + l.inputs[1] + "' " + dims_str(in[1]) +
               ": the shapes differ");
        l.shape = x;
        l.flops = double(numel(x));
        break;
      case LayerOp::MaxPool: {
        need_image_like();
        if (l.kernel < 1 || l.kernel > kMaxKernel) fail("'kernel' must be in 1.." + std::to_string(kMaxKernel));
        if (l.stride < 1 || l.stride > kMaxStride) fail("'stride' must be in 1.." + std::to_string(kMaxStride));
        if (l.padding < 0 || 2 * l.padding > l.kernel) fail("'padding' must be in 0..kernel/2 (PyTorch's rule)");
        if (l.kernel > x[1] + 2 * l.padding || l.kernel > x[2] + 2 * l.padding)
          fail("kernel " + std::to_string(l.kernel) + " is bigger than the padded input " + dims_str(x));
        l.shape = {x[0], (x[1] + 2 * l.padding - l.kernel) / l.stride + 1,
                   (x[2] + 2 * l.padding - l.kernel) / l.stride + 1};
        l.flops = double(numel(l.shape)) * l.kernel * l.kernel;
        break;
      }
      case LayerOp::GlobalAvgPool:
        need_image_like();
        l.shape = {x[0]};
        l.flops = double(numel(x));
        break;
      case LayerOp::Flatten:
        l.shape = {int(numel(x))};
        break;
      case LayerOp::Linear:
        if (x.size() != 1) fail("needs a [features] input, got " + dims_str(x) + " (flatten or gavgpool it first)");
        if (l.out < 1 || l.out > kMaxChannels) fail("'out' must be in 1.." + std::to_string(kMaxChannels));
        l.shape = {l.out};
        l.params = int64_t(x[0]) * l.out + (l.bias ? l.out : 0);
        l.flops = 2.0 * double(x[0]) * l.out;
        break;
    }
    if (numel(l.shape) > kMaxElementsPerImage) fail("output " + dims_str(l.shape) + " is too large");
  }
  // Every output but the last feeds a later layer: a dead layer would get no gradient.
  std::vector<bool> used(d.layers.size(), false);
  for (const auto& l : d.layers)
    for (int k : l.input_index)
      if (k >= 0) used[size_t(k)] = true;
  for (size_t i = 0; i + 1 < d.layers.size(); ++i)
    if (!used[i])
      throw Error(where + ": layer '" + d.layers[i].name + "' (" + layer_op_name(d.layers[i].op) +
                  "): its output is used by no later layer (only the last layer's may be unused)");
  const LayerDesc& last = d.layers.back();
  if (last.shape != std::vector<int>{d.classes})
    throw Error(where + ": layer '" + last.name + "' (" + layer_op_name(last.op) + "), the last, gives " +
                dims_str(last.shape) + ", not [classes] = [" + std::to_string(d.classes) + "]");
  for (const auto& t : d.taps) {
    const int k = d.index_of(t);
    if (k < 0) fail_model("tap '" + t + "' names no layer");
    if (d.layers[size_t(k)].shape.size() != 3)
      fail_model("tap '" + t + "' gives " + dims_str(d.layers[size_t(k)].shape) + ", not a [C,H,W] feature map");
  }
}

ModelDescription parse_model_description(const nlohmann::json& j, const std::string& source) {
  ModelDescription d;
  d.source = source;
  const std::string where = "model description " + source;
  auto fail = [&](const std::string& why) { throw Error(where + ": " + why); };
  if (!j.is_object()) fail("must be a JSON object with 'input', 'classes' and 'layers'");
  for (const auto& [key, v] : j.items())
    if (key != "input" && key != "classes" && key != "layers" && key != "taps" && key != "comment")
      fail("unknown field '" + key + "' (known: input, classes, layers, taps, comment)");
  if (!j.contains("input") || !j["input"].is_object()) fail("'input' must be {\"channels\": C, \"height\": H, \"width\": W}");
  const auto& input = j["input"];
  for (const auto& [key, v] : input.items())
    if (key != "channels" && key != "height" && key != "width") fail("unknown field 'input." + key + "'");
  try {
    for (const char* k : {"channels", "height", "width"})
      if (!input.contains(k)) fail(std::string("'input.") + k + "' is missing");
    d.in_channels = json_int<int>(input["channels"], "input.channels");
    d.height = json_int<int>(input["height"], "input.height");
    d.width = json_int<int>(input["width"], "input.width");
    if (!j.contains("classes")) fail("'classes' is missing");
    d.classes = json_int<int>(j["classes"], "classes");
  } catch (const Error& e) {
    if (std::string(e.what()).rfind(where, 0) == 0) throw;
    fail(e.what());
  }
  if (!j.contains("layers") || !j["layers"].is_array()) fail("'layers' must be a list of layers");
  if (j["layers"].size() > size_t(kMaxLayers)) fail("more than " + std::to_string(kMaxLayers) + " layers");
  std::string previous = "input";
  size_t index = 0;
  for (const auto& lj : j["layers"]) {
    LayerDesc l;
    std::string label = "layer #" + std::to_string(index++);
    auto lfail = [&](const std::string& why) { throw Error(where + ": " + label + ": " + why); };
    if (!lj.is_object()) lfail("must be an object with 'name' and 'op'");
    if (!lj.contains("name") || !lj["name"].is_string()) lfail("'name' must be a string");
    l.name = lj["name"].get<std::string>();
    label = "layer '" + l.name + "'";
    if (!lj.contains("op") || !lj["op"].is_string()) lfail("'op' must be a string");
    const std::string op = lj["op"].get<std::string>();
    const OpInfo* oi = nullptr;
    std::string known;
    for (const auto& i : op_table()) {
      if (op == i.name) oi = &i;
      known += (known.empty() ? "" : ", ") + std::string(i.name);
    }
    if (!oi) lfail("unknown op '" + op + "' (known: " + known + ")");
    l.op = oi->op;
    label += " (" + op + ")";
    for (const auto& [key, v] : lj.items()) {
      if (key == "name" || key == "op" || key == "inputs" || key == "comment") continue;
      bool ok = false;
      for (const auto& a : oi->attributes) ok = ok || a == key;
      if (!ok) {
        std::string attrs;
        for (const auto& a : oi->attributes) attrs += (attrs.empty() ? "" : ", ") + a;
        lfail("unknown attribute '" + key + "' (" + op + " takes: " + (attrs.empty() ? "none" : attrs) + ")");
      }
    }
    if (lj.contains("inputs")) {
      const auto& ins = lj["inputs"];
      if (!ins.is_array()) lfail("'inputs' must be a list of layer names");
      for (const auto& i : ins) {
        if (!i.is_string()) lfail("'inputs' must be a list of layer names, got " + i.dump());
        l.inputs.push_back(i.get<std::string>());
      }
    } else {
      l.inputs = {previous};
    }
    auto int_attr = [&](const char* key, int& dst, bool required) {
      if (!lj.contains(key)) {
        if (required) lfail(std::string("'") + key + "' is missing");
        return;
      }
      try {
        dst = json_int<int>(lj[key], key);
      } catch (const Error& e) {
        lfail(e.what());
      }
    };
    auto bool_attr = [&](const char* key, bool& dst) {
      if (!lj.contains(key)) return;
      if (!lj[key].is_boolean()) lfail(std::string("'") + key + "' must be true or false, got " + lj[key].dump());
      dst = lj[key].get<bool>();
    };
    switch (l.op) {
      case LayerOp::Conv:
        int_attr("out", l.out, true);
        int_attr("kernel", l.kernel, true);
        int_attr("stride", l.stride, false);
        int_attr("padding", l.padding, false);
        int_attr("groups", l.groups, false);
        bool_attr("bias", l.bias);
        break;
      case LayerOp::MaxPool:
        int_attr("kernel", l.kernel, true);
        l.stride = l.kernel;  // PyTorch's default
        int_attr("stride", l.stride, false);
        int_attr("padding", l.padding, false);
        break;
      case LayerOp::Linear:
        l.bias = true;
        int_attr("out", l.out, true);
        bool_attr("bias", l.bias);
        break;
      case LayerOp::Dropout:
        if (lj.contains("p")) {
          try {
            l.p = json_float(lj["p"], "p");
          } catch (const Error& e) {
            lfail(e.what());
          }
        }
        break;
      default:
        break;
    }
    previous = l.name;
    d.layers.push_back(std::move(l));
  }
  if (j.contains("taps")) {
    if (!j["taps"].is_array()) fail("'taps' must be a list of layer names");
    for (const auto& t : j["taps"]) {
      if (!t.is_string()) fail("'taps' must be a list of layer names, got " + t.dump());
      d.taps.push_back(t.get<std::string>());
    }
  }
  infer_shapes(d);
  return d;
}

ModelDescription load_model_description(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("model description " + path + ": cannot open");
  std::stringstream ss;
  ss << in.rdbuf();
  const nlohmann::json j = nlohmann::json::parse(ss.str(), nullptr, false);
  if (j.is_discarded()) throw Error("model description " + path + ": not valid JSON");
  return parse_model_description(j, path);
}

}  // namespace vkqat::nn

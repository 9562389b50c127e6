#include "nn/train/checkpoint.h"

#include <algorithm>
#include <cfloat>
#include <cmath>

#include "backend/error.h"

namespace vkqat::nn {

static std::vector<int64_t> shape64(const Tensor& t) { return {t.shape().begin(), t.shape().end()}; }

SafeTensors network_state(const Network& net, int64_t batches_tracked) {
  SafeTensors st;
  for (const auto& [name, tensor] : net.state()) st.add_f32(name, shape64(*tensor), tensor->download());
  for (const std::string& bn : net.batchnorm_names()) st.add_i64(bn + ".num_batches_tracked", {}, {batches_tracked});
  return st;
}

void load_network_state(Network& net, const SafeTensors& st, const std::vector<std::string>& ignored_prefixes,
                        bool ignore_unexpected) {
  const std::string file = st.source.empty() ? "checkpoint" : st.source;
  std::map<std::string, bool> expected;
  for (const auto& [name, tensor] : net.state()) {
    expected[name] = true;
    if (!st.has(name))
      throw Error(file + ": tensor '" + name + "' is missing (model " + net.config().name + ", width " +
                  std::to_string(net.config().width) + ")");
    const StTensor& t = st.at(name);
    if (t.shape != shape64(*tensor)) {
      std::string got = "[";
      for (size_t i = 0; i < t.shape.size(); ++i) got += (i ? ", " : "") + std::to_string(t.shape[i]);
      throw Error(file + ": tensor '" + name + "' has shape " + got + "], the model expects " +
                  tensor->shape_str() + " (a checkpoint of another model or width than " + net.config().name +
                  " width " + std::to_string(net.config().width) + "?)");
    }
    tensor->upload(st.get_f32(name));
  }
  for (const std::string& bn : net.batchnorm_names()) expected[bn + ".num_batches_tracked"] = true;
  for (const auto& [name, t] : st.tensors) {
    if (expected.count(name)) continue;
    bool ignored = false;
    for (const auto& p : ignored_prefixes) ignored = ignored || name.rfind(p, 0) == 0;
    if (!ignored && !ignore_unexpected)
      throw Error(file + ": unexpected tensor '" + name + "' for model " + net.config().name +
                  " (a quantized or --aux checkpoint? the run's configuration must match)");
  }
}

int load_named_tensors(const NamedTensors& named, const SafeTensors& st) {
  int n = 0;
  for (const auto& [name, t] : named) {
    if (!st.has(name)) continue;
    t->upload(st.get_f32(name, std::vector<int64_t>(t->shape().begin(), t->shape().end())));
    ++n;
  }
  return n;
}

nlohmann::json checkpoint_metadata(const SafeTensors& st) {
  auto it = st.metadata.find("vkqat");
  if (it == st.metadata.end()) return nullptr;
  const std::string where = (st.source.empty() ? std::string("checkpoint") : st.source) + ": __metadata__.vkqat";
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(it->second);
  } catch (const nlohmann::json::exception& e) {
    throw Error(where + " is not valid JSON: " + e.what());
  }
  if (!j.is_object()) throw Error(where + " is not a JSON object");
  // Every field a reader uses is checked here, so that a damaged or hand-edited file is
  // reported against the file, not as a flag the user never passed.
  auto require = [&](const nlohmann::json& obj, const char* key, bool ok, const char* what, const std::string& in) {
    if (obj.contains(key) && !ok) throw Error(where + in + " '" + key + "' must be " + what + ", got " + obj.at(key).dump());
  };
  auto field = [](const nlohmann::json& obj, const char* key) { return obj.contains(key) ? obj.at(key) : nlohmann::json(); };
  auto bits_ok = [](const nlohmann::json& b) {
    return b.is_number_integer() && (b.get<int64_t>() == 32 || (b.get<int64_t>() >= 1 && b.get<int64_t>() <= 8));
  };
  require(j, "format", field(j, "format").is_string(), "a string", "");
  require(j, "dataset", field(j, "dataset").is_string(), "a string", "");
  require(j, "aux", field(j, "aux").is_boolean(), "true or false", "");
  require(j, "step", field(j, "step").is_number_integer() && field(j, "step").get<int64_t>() >= 0,
          "a non-negative integer", "");
  require(j, "wbits", bits_ok(field(j, "wbits")), "1..8 or 32", "");
  require(j, "abits", bits_ok(field(j, "abits")), "1..8 or 32", "");
  if (j.contains("model")) {
    const nlohmann::json& m = j["model"];
    if (!m.is_object()) throw Error(where + " 'model' must be an object, got " + m.dump());
    ModelConfig mc;
    try {
      mc = ModelConfig::from_json(m);
    } catch (const Error& e) {
      throw Error(where + ": " + e.what());
    }
    const auto names = model_names();
    if (mc.model_file.empty() && std::find(names.begin(), names.end(), mc.name) == names.end())
      throw Error(where + " names an unknown model '" + mc.name + "'");
    if (mc.width < 1 || mc.width > 1024 || mc.in_channels < 1 || mc.in_channels > 3 || mc.height < 1 ||
        mc.height > 1024 || mc.width_px < 1 || mc.width_px > 1024 || mc.classes < 2 || mc.classes > 100000)
      throw Error(where + " holds an implausible model config " + m.dump());
  }
  if (j.contains("quant") && !j["quant"].is_null()) {
    const nlohmann::json& q = j["quant"];
    if (!q.is_object()) throw Error(where + " 'quant' must be an object or null, got " + q.dump());
    require(q, "quantizer", field(q, "quantizer").is_string(), "a string", " quant");
    for (const char* key : {"wbits", "abits", "edge_bits"}) require(q, key, bits_ok(field(q, key)), "1..8 or 32", " quant");
    for (const char* key : {"sat", "sat_conv"}) require(q, key, field(q, key).is_boolean(), "true or false", " quant");
    require(q, "bits_config", field(q, "bits_config").is_object(), "an object", " quant");
  }
  if (j.contains("normalization")) {
    const nlohmann::json& n = j["normalization"];
    auto three = [](const nlohmann::json& v) {
      if (!v.is_array() || v.size() != 3) return false;
      for (const auto& x : v)  // within float range: readers convert with get<float>
        if (!x.is_number() || !(std::fabs(x.get<double>()) <= double(FLT_MAX))) return false;
      return true;
    };
    if (!n.is_object() || !three(field(n, "mean")) || !three(field(n, "std")))
      throw Error(where + " 'normalization' must be {\"mean\": [3 numbers], \"std\": [3 numbers]}, got " + n.dump());
  }
  return j;
}

}  // namespace vkqat::nn

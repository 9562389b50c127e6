#include "nn/train/checkpoint.h"

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
                  tensor->shape_str() + " (wrong --model or --width?)");
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
  try {
    return nlohmann::json::parse(it->second);
  } catch (const nlohmann::json::exception& e) {
    throw Error(st.source + ": __metadata__.vkqat is not valid JSON: " + e.what());
  }
}

}  // namespace vkqat::nn

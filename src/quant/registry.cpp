#include "quant/registry.h"

#include "backend/error.h"

namespace vkqat::quant {
namespace {
template <class Spec>
const Spec& find(const std::vector<Spec>& specs, const std::string& name, const std::string& flag) {
  for (const Spec& s : specs)
    if (s.name == name) return s;
  std::string known;
  for (const Spec& s : specs) known += (known.empty() ? "" : ", ") + s.name;
  throw Error(flag + " " + name + ": unknown quantizer (known: " + known + ")");
}
}  // namespace

const Registry& registry() {
  static const Registry r = [] {
    Registry r;
    register_dorefa(r);
    register_pact(r);
    register_lsq(r);
    register_minmax(r);
    return r;
  }();
  return r;
}

const WeightQuantizerSpec& weight_quantizer(const std::string& name, const std::string& flag) {
  return find(registry().weights, name, flag);
}

const ActQuantizerSpec& act_quantizer(const std::string& name, const std::string& flag) {
  return find(registry().acts, name, flag);
}

const std::vector<QuantizerPreset>& quantizer_presets() {
  static const std::vector<QuantizerPreset> presets = {
      {"cgpact", "dorefa", "cg-pact"},  // the SAT paper's recipe (default)
      {"dorefa-pact", "dorefa", "pact"},
      {"dorefa", "dorefa", "dorefa"},
      {"lsq", "lsq", "lsq"},
      {"minmax", "minmax", "minmax"},
  };
  return presets;
}

const QuantizerPreset* find_preset(const std::string& name) {
  for (const QuantizerPreset& p : quantizer_presets())
    if (p.name == name) return &p;
  return nullptr;
}

}  // namespace vkqat::quant

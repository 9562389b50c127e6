#pragma once
// Quantizers by name. A quantizer is its own file (the record functions, its shaders, and
// the nn::WeightQuantizer / nn::ActQuantizer wrapper that the network calls) plus one
// register_X(Registry&) line in registry.cpp. --wquant and --aquant pick from here;
// --quantizer names a preset pair (METHODS.md: DoReFa weights with CG-PACT by default).
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "backend/context.h"
#include "nn/model/quant_hooks.h"

namespace vkqat::quant {

struct WeightQuantizerSpec {
  std::string name, summary;
  int min_bits = 1;          // LSQ and min-max are symmetric: 1 bit has no levels
  bool per_channel = false;  // supports --per-channel (one scale per output channel)
  std::function<std::unique_ptr<nn::WeightQuantizer>(Context& ctx, const std::string& layer, const nn::Tensor& w,
                                                     int bits, bool per_channel)>
      make;
};

struct ActQuantizerSpec {
  std::string name, summary;
  // consumer: the layer that reads the activation (LayerRole::Last for the FC's input).
  std::function<std::unique_ptr<nn::ActQuantizer>(Context& ctx, const std::string& name, const std::vector<int>& shape,
                                                  int bits, nn::LayerRole consumer)>
      make;
  // The signed form, for inputs that can be negative (a linear bottleneck feeding a conv);
  // empty when the method has none (the policy then refuses naming the activation).
  std::function<std::unique_ptr<nn::ActQuantizer>(Context& ctx, const std::string& name, const std::vector<int>& shape,
                                                  int bits)>
      make_signed;
};

struct Registry {
  std::vector<WeightQuantizerSpec> weights;
  std::vector<ActQuantizerSpec> acts;
};

// The built-in quantizers (built once).
const Registry& registry();
// Throws Error naming `flag` and listing the known names when `name` is unknown.
const WeightQuantizerSpec& weight_quantizer(const std::string& name, const std::string& flag = "--wquant");
const ActQuantizerSpec& act_quantizer(const std::string& name, const std::string& flag = "--aquant");

// --quantizer NAME: a weight quantizer and an activation quantizer that go together.
struct QuantizerPreset {
  std::string name, wquant, aquant;
};
const std::vector<QuantizerPreset>& quantizer_presets();
const QuantizerPreset* find_preset(const std::string& name);  // null when unknown

// One per quantizer file.
void register_dorefa(Registry& r);  // dorefa.cpp: DoReFa weights, DoReFa activations
void register_pact(Registry& r);    // pact.cpp: PACT and CG-PACT activations
void register_lsq(Registry& r);     // lsq.cpp: LSQ weights and activations
void register_minmax(Registry& r);  // minmax.cpp: min-max weights and activations

}  // namespace vkqat::quant

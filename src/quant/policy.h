#pragma once
// The quantization policy of a run: which quantizer each weight and activation gets, at
// how many bits (METHODS.md section 5), implementing nn::QuantPolicy.
// --wquant and --aquant name quantizers of the registry (registry.h); --quantizer names a
// preset pair, overridden by either:
//   --quantizer  weights (--wquant)   activations (--aquant)
//   cgpact       dorefa               cg-pact: PACT with the calibrated (SAT) alpha gradient  (default)
//   dorefa-pact  dorefa               pact: PACT with the original alpha gradient
//   dorefa       dorefa               dorefa: clip to [0, 1]
//   lsq          lsq (signed)         lsq (unsigned), steps initialised from the data
//   minmax       minmax (symmetric)   minmax: ReLU then a running range (EMA 0.01)
// --per-channel: one scale per output channel for the weight quantizers that support it.
// First conv and last FC weights use --edge-bits (8); the image is never quantized; the
// FC's input is quantized to --abits (PACT alpha starts at 10 there, 8 elsewhere).
// --sat rescales the last FC's effective weight to n_out Var = 1; --sat-conv every conv's
// to fan_out Var = 1. A bits-config JSON overrides bits per layer:
//   {"layer1.0.conv1": {"wbits": 2}, "layer1.0.act1": {"abits": 2}, "fc": {"wbits": 4}}
// Names are state-dict prefixes; one that matches no layer is an error.
#include <nlohmann/json.hpp>

#include <map>
#include <memory>
#include <set>
#include <string>

#include "nn/model/quant_hooks.h"

namespace vkqat::nn {
struct TrainConfig;
}

namespace vkqat::quant {

struct QuantConfig {
  std::string quantizer = "cgpact";  // the preset, or "custom" when the pair matches none
  std::string wquant = "dorefa", aquant = "cg-pact";
  bool per_channel = false;
  int wbits = 32, abits = 32, edge_bits = 8;
  bool sat = false, sat_conv = false;
  nlohmann::json bits_config = nlohmann::json::object();  // per-layer overrides
  std::string bits_config_source = "--bits-config";       // for error messages
  bool quantized() const { return wbits != 32 || abits != 32; }
  bool any() const { return quantized() || sat || sat_conv; }
  void validate() const;  // throws Error naming the flag
  // --quantizer sets both halves; a non-empty wquant / aquant then replaces its half.
  void apply_preset(const std::string& preset, const std::string& wquant_flag, const std::string& aquant_flag);
  nlohmann::json to_json() const;
};

std::vector<std::string> quantizer_names();  // the presets
// Reads and checks a bits-config file.
nlohmann::json load_bits_config(const std::string& path);

std::unique_ptr<nn::QuantPolicy> make_quant_policy(const QuantConfig& cfg);
QuantConfig quant_config_from_json(const nlohmann::json& j);

// src/quant's quantization policy and auxiliary module, for nn::Trainer.
nn::QuantPlugins quant_plugins();
// The acceptance configuration's quantization on `c`: W{bits}A{bits} CG-PACT (the default
// preset) + SAT, with the full-precision auxiliary head (benches, tests).
void use_cgpact_sat_aux(nn::TrainConfig& c, int bits = 4);

}  // namespace vkqat::quant

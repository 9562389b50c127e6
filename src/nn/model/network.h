#pragma once
// Networks: a small graph of layers with activations and gradients planned once for a
// batch size. forward() and backward() record their ops into the training step.
#include <nlohmann/json.hpp>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "nn/model/layers.h"

namespace vkqat::nn {

struct ModelConfig {
  std::string name = "resnet20";  // model_names()
  int width = 16;                 // channels of the first stage (16 = standard; resnet18/34/50: 64)
  // mobilenet-v1/v2: channel multiplier (torchvision's width_mult); torchvision models: the
  // stem, "imagenet" (theirs) or "cifar" (3x3 stride 1, no max pool: small images).
  double width_mult = 1.0;
  std::string stem = "imagenet";
  int in_channels = 1, height = 28, width_px = 28, classes = 10;
  // --model-file: a JSON model description (model_desc.h), absolute; set, it replaces `name`
  // and `width` (GraphNetwork runs it).
  std::string model_file;
  // How this process uses the net, not part of the model (never serialized): built for
  // forward passes only (evaluation), a GraphNetwork allocates no gradient buffers and reuses
  // activations once their last forward reader ran; backward() then throws.
  bool forward_only = false;
  nlohmann::json to_json() const;
  static ModelConfig from_json(const nlohmann::json& j);  // throws Error on bad fields
};

std::vector<std::string> model_names();
// ModelConfig::name of a run whose model is a description file (ModelConfig::model_file).
inline constexpr const char* kModelFileName = "model-file";

// Where quantizers sit, in forward order. Statistics (and, in time, export and exact
// evaluation) walk this list instead of knowing a model's class.
struct WeightSite {
  std::string name;             // layer name ("conv1", "layer1.0.conv2", "fc")
  const Tensor* weight;         // the full-precision weight
  WeightQuantizer* quant;       // null: full precision
};
struct ActSite {
  std::string name;             // the quantizer's name ("conv1.act", "layer1.0.act2", "fc.act")
  const Tensor* input;          // what the quantizer (or ReLU) reads; undefined where a ReLU is fused into the BN before it
  ActQuantizer* quant;          // null: a ReLU or nothing
};
struct QuantSites {
  std::vector<WeightSite> weights;
  std::vector<ActSite> acts;
  const LinearLayer* classifier = nullptr;  // the last FC: SAT's layer
};

class Network {
 public:
  virtual ~Network() = default;
  // Reads input(), writes logits(). train: batch statistics and saved activations.
  virtual void forward(Recording& rec, bool train) = 0;
  // Reads d_logits(), writes every parameter's grad (overwriting).
  virtual void backward(Recording& rec) = 0;
  // Records what moves per-step state on (dropout's mask counter): once per training step,
  // after the step's last forward/backward (the trainer records it with the optimizer).
  virtual void advance_step(Recording& /*rec*/) {}
  // Sets that per-step state for training step `step` (a resumed run draws the same masks).
  virtual void set_step(int64_t /*step*/) {}
  // Whether the net has residual blocks (the auxiliary module needs them).
  virtual bool has_residual_blocks() const = 0;
  // Gives every weight and activation the quantizer the policy chooses (before recording).
  virtual void apply_quant_policy(QuantPolicy& policy) = 0;
  // Stem output and each residual sum, before their activation (quantizer); allocates the
  // gradient buffers and makes backward add them in. Empty for nets without blocks.
  virtual std::vector<FeatureTap> feature_taps() { return {}; }
  // Every weight and activation site (see QuantSites), valid until the next apply_quant_policy.
  virtual QuantSites quant_sites() = 0;

  void init(uint64_t seed);  // deterministic initialisation of every parameter/buffer
  Tensor& input() { return input_; }
  Tensor& logits() { return logits_; }
  Tensor& d_logits() { return d_logits_; }
  const ModelConfig& config() const { return config_; }
  int batch() const { return batch_; }
  const std::vector<Parameter*>& parameters() const { return params_; }
  // The state dict in a stable order: parameters and BN running statistics, with names
  // and layouts of a torchvision-style PyTorch model.
  const std::vector<std::pair<std::string, Tensor*>>& state() const { return state_; }
  // Names of the BatchNorm layers (for num_batches_tracked in checkpoints).
  const std::vector<std::string>& batchnorm_names() const { return bn_names_; }
  const std::vector<BatchNorm2dLayer*>& batchnorm_layers() const { return bn_layers_; }
  uint64_t parameter_count() const;
  const std::vector<ActQuantizer*>& act_quantizers() const { return act_quantizers_; }

 protected:
  Network(Context& ctx, const ModelConfig& cfg, int batch);
  void register_conv(Conv2dLayer& c);
  void register_bn(BatchNorm2dLayer& b);
  void register_linear(LinearLayer& l);
  // Adds a quantizer's learned parameters and state to params_ / state_.
  void register_quantizer_state(std::vector<Parameter*> params, const NamedTensors& state);
  void register_act_quantizer(ActQuantizer* q);
  virtual void init_layers(InitRng& rng) = 0;

  Context& ctx_;
  ModelConfig config_;
  int batch_;
  Tensor input_, logits_, d_logits_;
  std::vector<Parameter*> params_;
  std::vector<std::pair<std::string, Tensor*>> state_;
  std::vector<std::string> bn_names_;
  std::vector<BatchNorm2dLayer*> bn_layers_;
  std::vector<ActQuantizer*> act_quantizers_;
};

// The built-in model's description (describe_model) or cfg.model_file's, run by GraphNetwork.
// Throws Error naming the model or field when the configuration is invalid.
std::unique_ptr<Network> build_network(Context& ctx, const ModelConfig& cfg, int batch);

}  // namespace vkqat::nn

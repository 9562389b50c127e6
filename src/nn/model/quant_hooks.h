#pragma once
// The one interface through which src/quant plugs into nn (nn knows nothing of concrete
// quantizers): a layer asks its weight quantizer for the effective weight each step and
// its activation quantizer to replace the ReLU; a QuantPolicy decides, per layer, which
// quantizer (if any) each gets. Learned quantizer parameters (PACT alpha, LSQ steps) are
// Parameters without weight decay; running statistics are extra state-dict tensors.
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "backend/error.h"
#include "backend/recording.h"
#include "nn/model/parameter.h"
#include "nn/ops/grid.h"

namespace vkqat::nn {

class BatchNorm2dLayer;
using NamedTensors = std::vector<std::pair<std::string, Tensor*>>;

class WeightQuantizer {
 public:
  virtual ~WeightQuantizer() = default;
  // wq = Q(w), recorded once per step before the layer's forward reads wq.
  virtual void forward(Recording& rec, const Tensor& w, Tensor& wq, bool train) = 0;
  // dw = (dQ/dw)^T dwq, overwriting dw (straight-through where Q rounds).
  virtual void backward(Recording& rec, const Tensor& w, const Tensor& dwq, Tensor& dw) = 0;
  virtual std::vector<Parameter*> parameters() { return {}; }
  virtual NamedTensors state() { return {}; }  // non-trainable state for checkpoints
  // What it is, for statistics and reports: the method ("dorefa", "lsq", "minmax"; "fp32"
  // for SAT's rescale alone), its bits (32: not quantized), whether SAT rescales the result.
  struct Kind {
    std::string method = "fp32";
    int bits = 32;
    bool sat = false;
  };
  virtual Kind kind() const = 0;
  // "dorefa 4-bit", "dorefa 2-bit + sat", "fp32 + sat".
  std::string describe() const {
    const Kind k = kind();
    std::string d = k.method == "fp32" ? k.method : k.method + " " + std::to_string(k.bits) + "-bit";
    return k.sat ? d + " + sat" : d;
  }
  // A quantizer whose every output is an integer times one step says so: evaluation then
  // convolves the integers exactly (nn/ops/grid.h). Valid after forward() was recorded.
  virtual std::optional<Grid> grid() const { return std::nullopt; }
};

// Applied where the full-precision net has a ReLU: y = Q(relu(x)) (the quantizers clip
// at 0 themselves), so x is the pre-activation.
class ActQuantizer {
 public:
  virtual ~ActQuantizer() = default;
  virtual void forward(Recording& rec, const Tensor& x, Tensor& y, bool train) = 0;
  // dx (+)= (dQ/dx)^T dy; parameter gradients are overwritten.
  virtual void backward(Recording& rec, const Tensor& x, const Tensor& dy, Tensor& dx, bool accumulate) = 0;
  virtual std::vector<Parameter*> parameters() { return {}; }
  virtual NamedTensors state() { return {}; }
  virtual std::string describe() const = 0;
  // Quantizers initialised from data (LSQ's step from the first batch): while `on`, a
  // recorded forward also records that initialisation before quantizing, followed by
  // merge(rec, tensor) on each initialised tensor when merge is given (data parallel: it
  // makes the value the global batch's on every process before anything downstream uses it).
  using InitMerge = std::function<void(Recording&, Tensor&)>;
  virtual bool wants_data_init() const { return false; }
  virtual void set_data_init(bool /*on*/, InitMerge /*merge*/ = {}) {}
  // A quantizer that is exactly BnQuantEpilogue's uniform clip-and-round (PACT) says so:
  // the BN pass that produces its input then applies it in the same pass (training), and
  // the BN backward pass applies its backward (BnQuantBackward), leaving per-channel
  // partials of the clip gradient that merge_clip_grad turns into the parameter's gradient.
  struct UniformClip {
    const Tensor* clip = nullptr;  // [1]
    float levels = 0, inv_levels = 0;
    bool calibrated = false;  // the clip gradient includes CG-PACT's quantization-error term
  };
  virtual std::optional<UniformClip> uniform_clip() const { return std::nullopt; }
  // Overwrites the clip's gradient with the sum of the partials (F32 [C]).
  virtual void merge_clip_grad(Recording& /*rec*/, const Tensor& /*partials*/) {
    throw Error(describe() + ": not a uniform-clip quantizer, its backward cannot run inside BN's");
  }
  // As WeightQuantizer::grid(): outputs are integers times one step (a uniform clip's is
  // clip / levels).
  virtual std::optional<Grid> grid() const {
    if (auto c = uniform_clip()) return Grid{c->clip, c->inv_levels};
    return std::nullopt;
  }
};

enum class LayerRole {
  First,   // the stem conv: sees the image (which is never quantized)
  Middle,  // everything else
  Last,    // the classifier FC (SAT rescales it; its input is quantized like the rest)
};

class QuantPolicy {
 public:
  virtual ~QuantPolicy() = default;
  // Return null for a full-precision weight / activation. `layer` is the state-dict
  // prefix of the layer ("layer1.0.conv1"); `name` of an activation is its own prefix
  // ("layer1.0.act1").
  // `w` holds its initial values (LSQ initialises its step from them).
  virtual std::unique_ptr<WeightQuantizer> weight(Context& ctx, const std::string& layer, const Tensor& w,
                                                  LayerRole role) = 0;
  virtual std::unique_ptr<ActQuantizer> activation(Context& ctx, const std::string& name,
                                                   const std::vector<int>& shape, LayerRole consumer) = 0;
  // A signed activation quantizer for a value that can be negative and feeds a conv or
  // linear with no ReLU between (a linear bottleneck: "LAYER.act" after a batchnorm or add).
  // Null: that value stays full precision.
  virtual std::unique_ptr<ActQuantizer> signed_activation(Context& /*ctx*/, const std::string& /*name*/,
                                                          const std::vector<int>& /*shape*/) {
    return nullptr;
  }
  // Called once every layer has asked: lets a policy report names it was given that match
  // no layer (e.g. a bits-config file naming a layer the model does not have).
  virtual void finish() {}
};

// A point of the low-precision net that the auxiliary module reads, and the net's gradient
// buffer at that point, which the auxiliary module fills first.
struct FeatureTap {
  std::string name;
  const Tensor* value = nullptr;  // [N, C, H, W]
  Tensor* grad = nullptr;          // same shape: the net's own gradient buffer at this point. The aux
                                   // module's backward overwrites it, then the net's backward adds in.
};

}  // namespace vkqat::nn

#include <functional>

#include <nlohmann/json.hpp>

namespace vkqat::nn {

class Network;

// A training-only head fed by the network's feature taps (the full-precision auxiliary
// module): recorded after the network's forward and before its backward.
class AuxiliaryHead {
 public:
  virtual ~AuxiliaryHead() = default;
  virtual void init(uint64_t seed) = 0;
  virtual void forward(Recording& rec, bool train) = 0;
  virtual void backward(Recording& rec) = 0;  // reads d_logits(), writes the taps' gradients
  virtual Tensor& logits() = 0;
  virtual Tensor& d_logits() = 0;
  virtual const std::vector<Parameter*>& parameters() const = 0;
  virtual const NamedTensors& state() const = 0;  // names start with "aux."
  virtual const std::vector<std::string>& batchnorm_names() const = 0;
  virtual std::vector<BatchNorm2dLayer*> batchnorm_layers() = 0;
};

// How the trainer gets quantizers and the auxiliary head without knowing src/quant:
// the application wires src/quant's implementations in.
struct QuantPlugins {
  std::function<std::unique_ptr<QuantPolicy>(const nlohmann::json& quant_config)> policy;
  std::function<std::unique_ptr<AuxiliaryHead>(Context& ctx, Network& net)> aux;
};

}  // namespace vkqat::nn

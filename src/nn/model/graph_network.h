#pragma once
// One engine for any model description (model_desc.h), Caffe's Net in miniature: layers run
// in order forward and in reverse backward, a tensor feeding several layers gets their
// gradients summed (the first writer overwrites, the rest add), every activation and gradient
// buffer is allocated once for the batch. The fused kernels are chosen by pattern when the
// step is recorded, not written per model:
//   batchnorm -> relu (its only consumer)            BN forward/backward with the ReLU inside;
//   batchnorm -> relu or relu6 with an activation quantizer
//                                                    BN's forward_quantized / backward_quantized
//                                                    (PACT in BN's passes; the quantizer replaces
//                                                    ReLU6 as in the PACT papers);
//   batchnorm -> add -> relu (each the only consumer of the one before; training)
//                                                    the residual sum (and PACT or the ReLU)
//                                                    in BN's pass.
// Activation and gradient buffers share one pool where their lifetimes in the step do not
// overlap (graph_memory.h; the timeline and every reader: graph_network_buffers.cpp). A
// network built for forward only (ModelConfig::forward_only: evaluation) has no gradient
// buffers, and its activations die after their last forward read.
// Quantization: a conv reading the image is LayerRole::First, the last linear Last (its input
// quantized as "NAME.act"), every relu's and relu6's activation quantizer is named after the layer.
// Dropout (training only) draws its mask from a per-layer seed (from the init seed) and a
// device step counter: forward and backward of a step read the same counter, which only
// advance_step() moves, recorded by the trainer once per step after the optimizer; so the
// recorded step replays with a new mask each step, and recordings without it (the gradient
// checks' loss and gradient passes) all see the same mask.
#include <memory>

#include "nn/model/graph_memory.h"
#include "nn/model/model_desc.h"
#include "nn/model/network.h"

namespace vkqat::nn {

class GraphNetwork : public Network {
 public:
  // Throws Error naming the description and layer for what the engine cannot run yet
  // (conv bias, grouped but not depthwise convs, linear without bias) or when
  // the description's input and classes differ from cfg's.
  // reuse_buffers: activation and gradient buffers whose lifetimes do not overlap share
  // memory (graph_memory.h); false gives each its own (tests compare the two).
  GraphNetwork(Context& ctx, const ModelDescription& desc, const ModelConfig& cfg, int batch,
               bool reuse_buffers = true);
  ~GraphNetwork() override;
  void forward(Recording& rec, bool train) override;
  void backward(Recording& rec) override;
  bool has_residual_blocks() const override;
  void advance_step(Recording& rec) override;
  void set_step(int64_t step) override;
  void apply_quant_policy(QuantPolicy& policy) override;
  std::vector<FeatureTap> feature_taps() override;
  QuantSites quant_sites() override;
  const ModelDescription& description() const { return desc_; }
  // Bytes of the shared buffer pool (0 without reuse): tests and `vkqat model show`.
  uint64_t pool_bytes() const { return pool_.defined() ? pool_.bytes() : 0; }
  // The bytes live at the busiest step: no placement of these lifetimes needs less.
  uint64_t pool_lower_bound() const { return pool_lower_bound_; }
  // Whether conv layer `name` convolves integer levels in evaluation (its input is on an
  // activation quantizer's grid and its weights on their quantizer's); false for other layers.
  bool conv_exact_eval(const std::string& name) const;
  // Tests only: the gradient of one input of this add layer is dropped (as a forgotten
  // shortcut gradient would be), for the gradient check to catch.
  void drop_add_input_grad_for_test(const std::string& add_layer, int input);
  // Tests only: every buffer's lifetime ends at its first use (reused far too early), for the
  // reuse test to show it catches that.
  void cut_lifetimes_short_for_test();

 protected:
  void init_layers(InitRng& rng) override;

 private:
  struct Node;
  Node& node(int i) { return *nodes_[size_t(i)]; }
  void plan();  // chooses the fusions from the current quantizers and taps
  // The activation and gradient buffers the chosen kernels use (graph_network_buffers.cpp):
  // each its own, or with reuse_ aliases of pool_ placed by their lifetimes.
  struct BufferSlot {
    Tensor* tensor;
    std::vector<int> shape;
  };
  void place_buffers();
  std::vector<BufferSlot> buffer_slots();
  std::vector<BufferLifetime> buffer_lifetimes(const std::vector<BufferSlot>& slots);
  bool is_linear_bottleneck(int i);  // needs a signed activation quantizer (apply_quant_policy)
  const Tensor& consumed(int j);     // what node j's consumers read: its quantized output if it has one
  // The gradient buffer of input `k` of node i for a write, or null (the image needs none).
  Tensor* grad_target(int i, int k, bool& accumulate);
  // Whether input k of this add reads the add's own gradient buffer (no copy needed).
  bool passes_through(int add, int k);

  ModelDescription desc_;
  std::vector<std::unique_ptr<Node>> nodes_;
  Tensor d_image_;  // sink for gradients of non-conv layers that read the image
  Tensor grid_scratch_;
  Tensor undefined_;
  Tensor dropout_step_;  // U32 [1], the dropout layers' step counter (only with dropout)
  bool reuse_, forward_only_;
  bool cut_lifetimes_short_ = false;
  uint64_t pool_lower_bound_ = 0;
  Tensor pool_;  // reuse_: the memory of every activation and gradient buffer but logits / d_logits
};

}  // namespace vkqat::nn

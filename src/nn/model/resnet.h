#pragma once
// CIFAR-style ResNets (He et al. 2016, section 4.2): 3x3 stem conv + BN + ReLU, three
// stages of BasicBlocks (16/32/64 x width/16 channels, stride 2 entering stages 2 and 3,
// 1x1 conv + BN "option B" shortcut where the shape changes), global average pool, FC.
// Also a small plain CNN (no residual blocks) built from the same units.
#include <optional>

#include "nn/model/network.h"

namespace vkqat::nn {

// conv -> BN (-> ReLU fused into BN, or -> activation quantizer).
struct ConvBnUnit {
  ConvBnUnit() = default;
  ConvBnUnit(Context& ctx, const std::string& conv_name, const std::string& bn_name, const Conv2dShape& s, bool relu);
  void forward(Recording& rec, const Tensor& x, bool train);
  // dy: gradient w.r.t. out. dx null: input needs no gradient.
  void backward(Recording& rec, const Tensor& x, const Tensor& dy, Tensor* dx, bool accumulate_dx);
  // Keeps the BN output before the activation in `pre` (for a quantizer or a tap).
  void split_activation(Context& ctx);
  Conv2dLayer conv;
  BatchNorm2dLayer bn;
  bool relu = false;
  std::unique_ptr<ActQuantizer> act;  // replaces the ReLU
  Tensor conv_out, out, d_conv_out, d_out;  // d_out: gradient of out, written by the consumer
  Tensor pre, d_pre;                        // only when split (d_pre: unless the quantizer's backward is fused)
  bool d_pre_prefilled = false;             // d_pre already holds the aux module's gradient: add to it
};

// out = relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)).
struct BasicBlock {
  BasicBlock(Context& ctx, const std::string& name, int batch, int c_in, int c_out, int h, int w, int stride);
  void forward(Recording& rec, const Tensor& x, bool train);
  // Reads d_out; writes dx (overwrite).
  void backward(Recording& rec, const Tensor& x, Tensor& dx);
  std::string name;  // "layerS.B"
  ConvBnUnit c1, c2;
  std::optional<ConvBnUnit> down;
  std::unique_ptr<ActQuantizer> act_out;  // replaces the output ReLU
  Tensor sum;    // residual sum before the output ReLU / quantizer (the aux module taps this;
                 // training without a tap and with a ReLU skips it)
  Tensor out;    // relu(sum) or Q(sum)
  Tensor d_out;  // gradient of out, written by the next block / pooling
  Tensor d_sum;  // gradient of sum
  bool d_sum_prefilled = false;  // d_sum already holds the aux module's gradient: add to it
  // Tests only: leave the identity shortcut's gradient out of dx, the bug the network
  // gradient check must catch (tests/test_net_gradcheck.cpp proves it does).
  bool drop_shortcut_grad_for_test = false;
};

class ResNet : public Network {
 public:
  ResNet(Context& ctx, const ModelConfig& cfg, int batch, int blocks_per_stage);
  void forward(Recording& rec, bool train) override;
  void backward(Recording& rec) override;
  bool has_residual_blocks() const override { return true; }
  void apply_quant_policy(QuantPolicy& policy) override;
  std::vector<FeatureTap> feature_taps() override;
  QuantSites quant_sites() override;

  ConvBnUnit stem;
  std::vector<std::unique_ptr<BasicBlock>> blocks;
  Tensor pooled, d_pooled;
  std::unique_ptr<ActQuantizer> fc_act;  // quantizes the FC input
  Tensor pooled_q, d_pooled_q;
  LinearLayer fc;
  Tensor grid_scratch;  // the integer input of whichever conv evaluates exactly (nn/ops/grid.h)

 protected:
  void init_layers(InitRng& rng) override;

 private:
  void wire_input_grids();
};

// Exact evaluation (nn/ops/grid.h): wires each conv to the grid of the quantizer that
// produces its input (none: the float conv), all sharing `scratch`, sized here for the
// largest input on a grid.
void wire_input_grids(Context& ctx, const std::vector<std::pair<Conv2dLayer*, std::optional<Grid>>>& inputs,
                      Tensor& scratch);
// The grid of an activation quantizer's output (none without a quantizer).
inline std::optional<Grid> output_grid(const std::unique_ptr<ActQuantizer>& a) {
  return a ? a->grid() : std::nullopt;
}

class PlainCnn : public Network {
 public:
  PlainCnn(Context& ctx, const ModelConfig& cfg, int batch);
  void forward(Recording& rec, bool train) override;
  void backward(Recording& rec) override;
  bool has_residual_blocks() const override { return false; }
  QuantSites quant_sites() override;

 protected:
  void init_layers(InitRng& rng) override;

 private:
  // conv-bn-relu, maxpool, conv-bn-relu, maxpool, conv-bn-relu, global pool, fc
  ConvBnUnit u1;
  Tensor p1, d_p1;
  ConvBnUnit u2;
  Tensor p2, d_p2;
  ConvBnUnit u3;
  Tensor pooled, d_pooled;
  LinearLayer fc;
};

}  // namespace vkqat::nn

namespace vkqat::nn {

// Pre-activation ResNet (He et al. 2016b): out = conv2(relu(bn2(conv1(relu(bn1(x)))))) + sc,
// sc = x or a 1x1 conv (no BN) of relu(bn1(x)) where the shape changes. The stem is a bare
// 3x3 conv; a final BN + ReLU (state-dict name "bn") precedes pooling. Names follow the
// common PyTorch implementations: layerS.B.{bn1,conv1,bn2,conv2,downsample.0}.
struct PreActBlock {
  PreActBlock(Context& ctx, const std::string& name, int batch, int c_in, int c_out, int h, int w, int stride);
  void forward(Recording& rec, const Tensor& x, bool train);
  // Reads d_out; writes dx (adds to it when dx_prefilled: it holds the aux module's gradient).
  void backward(Recording& rec, const Tensor& x, Tensor& dx);
  std::string name;  // "layerS.B"
  BatchNorm2dLayer bn1, bn2;
  Conv2dLayer conv1, conv2;
  std::optional<Conv2dLayer> down;
  std::unique_ptr<ActQuantizer> act1, act2;  // replace the ReLUs after bn1 / bn2
  Tensor o1, h1, o2, sc, out;  // out: the residual sum
  Tensor d_o1, d_h1, d_o2, d_out;
  Tensor pre1, d_pre1, pre2, d_pre2;  // BN outputs before a quantizer (only when quantized)
  bool dx_prefilled = false;
};

class PreActResNet : public Network {
 public:
  PreActResNet(Context& ctx, const ModelConfig& cfg, int batch, int blocks_per_stage);
  void forward(Recording& rec, bool train) override;
  void backward(Recording& rec) override;
  bool has_residual_blocks() const override { return true; }
  void apply_quant_policy(QuantPolicy& policy) override;
  std::vector<FeatureTap> feature_taps() override;
  QuantSites quant_sites() override;

  Conv2dLayer stem;
  Tensor stem_out, d_stem_out;
  std::vector<std::unique_ptr<PreActBlock>> blocks;
  BatchNorm2dLayer final_bn;
  std::unique_ptr<ActQuantizer> final_act;  // replaces the ReLU after the final BN ("bn.act")
  Tensor final_pre, d_final_pre;
  Tensor final_out, d_final_out, pooled, d_pooled;
  std::unique_ptr<ActQuantizer> fc_act;  // quantizes the FC input
  Tensor pooled_q, d_pooled_q;
  LinearLayer fc;
  bool last_d_out_prefilled = false;  // the last block's d_out holds the aux gradient
  Tensor grid_scratch;  // the integer input of whichever conv evaluates exactly (nn/ops/grid.h)

 protected:
  void init_layers(InitRng& rng) override;
};

}  // namespace vkqat::nn

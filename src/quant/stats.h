#pragma once
// Training statistics for the visualizer and `vkqat train --stats-every`: computed on the
// device from the tensors the last step left behind, only a few KB read back.
//   weights (latent):  mean, Var, max|w|, histogram over [-max|w|, max|w|], and for DoReFa
//                      weights the occupancy of each of the 2^k levels (dead levels = 0)
//   activations:       histogram of the quantizer's input (the pre-activation) over
//                      [-R, R], R = 1.05 max(max|x|, alpha); counts of x >= alpha (clipped
//                      by PACT) and x < 0
//   last FC:           Var and norm of its effective weight without SAT's rescale (Q(W))
//                      and with it (Q(W) / sqrt(n_out Var)), n_out Var of what the layer
//                      uses; mean max-logit and softmax saturation over the last batch
// Two submissions per collection: pass 1 (recorded once) reduces and counts into small
// host-visible tensors; pass 2 (re-recorded: its ranges come from pass 1) histograms.
// Reuses nn::reduce_* / nn::histogram and quant::dorefa_weight_forward; two small shaders
// of its own (stats_clip.comp, stats_logits.comp).
#include <nlohmann/json.hpp>

#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "nn/model/network.h"
#include "nn/tensor.h"

namespace vkqat::quant {

constexpr int kStatsBins = 64;

struct WeightStats {
  std::string name;       // state-dict prefix: "layer1.0.conv1", "fc"
  std::string quantizer;  // the quantizer's describe(), "fp32" without one
  int bits = 32;          // DoReFa bits (levels are known for 2..8); 32: none
  int64_t numel = 0;
  float mean = 0, var = 0, max_abs = 0;  // of the latent (trained) weight
  std::vector<uint32_t> hist;            // kStatsBins + 2 (nn::histogram layout) over [-max_abs, max_abs]
  std::vector<uint32_t> occupancy;       // 2^bits: weights on each DoReFa level; empty: no levels
  // Latent weight value at the centre of each DoReFa level: atanh((2k/n - 1) tanh(max|w|)).
  std::vector<float> level_centres() const;
};

struct ActStats {
  std::string name;       // "conv1.act", "layer1.0.act1", "layer1.0.act2", "fc.act"
  std::string quantizer;  // describe() or "relu"
  float alpha = std::numeric_limits<float>::quiet_NaN();  // PACT clipping level; NaN: none
  int64_t numel = 0;
  float max_abs = 0, lo = 0, hi = 0;  // histogram range
  std::vector<uint32_t> hist;         // kStatsBins + 2 over [lo, hi]
  uint64_t above_alpha = 0, below_zero = 0;
  double clipped_fraction() const { return numel ? double(above_alpha) / double(numel) : 0; }
};

struct LastLayerStats {
  int n_out = 0;
  bool sat = false;                     // the layer rescales (--sat)
  double var_plain = 0, norm_plain = 0;  // Q(W) (W in full precision): no rescale
  double var_sat = 0, norm_sat = 0;      // Q(W) / sqrt(n_out Var[Q(W)])
  double n_var_effective = 0;            // n_out Var of the weight the layer uses
  double mean_max_logit = 0, mean_max_prob = 0, saturated_fraction = 0;  // max softmax > 0.99
};

// What the trainer reported for the step the statistics were taken after.
struct StepScalars {
  double loss = 0, acc = 0, aux_loss = 0, aux_acc = 0, lr = 0, images_per_s = 0;
  bool has_aux = false;
};

struct StatsSnapshot {
  int64_t step = 0;
  int epoch = 0;
  StepScalars scalars;
  std::vector<WeightStats> weights;
  std::vector<ActStats> acts;
  LastLayerStats last;
  nlohmann::json to_json() const;
  static StatsSnapshot from_json(const nlohmann::json& j);  // throws Error naming the field
};

// Collects statistics of a ResNet (the models with quantizers). Holds device buffers of its
// own, and references into `net`: build a new one when the network is rebuilt.
class StatsCollector {
 public:
  StatsCollector(Context& ctx, nn::Network& net);
  ~StatsCollector();
  // Between training steps, on the thread that trains.
  StatsSnapshot collect();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The two statistics shaders, reusable on their own.
// counts[0] (+)= #(x >= threshold[0]), counts[1] (+)= #(x < 0). counts: U32 [2].
void record_clip_counts(Recording& rec, const nn::Tensor& x, const nn::Tensor& threshold, nn::Tensor& counts);
// Per row of logits [N, C]: out[r] = (max logit, max softmax probability). out: F32 [N, 2].
void record_logit_stats(Recording& rec, const nn::Tensor& logits, nn::Tensor& out);

namespace ref {
std::vector<uint32_t> clip_counts(const std::vector<float>& x, float threshold);
std::vector<double> logit_stats(const std::vector<float>& logits, int rows, int classes);
}  // namespace ref

}  // namespace vkqat::quant

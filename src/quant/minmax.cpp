#include "quant/minmax.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "backend/error.h"
#include "nn/ops/relu.h"
#include "quant/registry.h"
#include "nn/ops/add.h"
#include "quant/plan.h"

namespace vkqat::quant {
namespace {

using detail::Plan;
using detail::PlanKind;
using detail::PlanPush;

struct WeightPush {
  PlanPush plan;
  float qp, inv_qp;
};
struct ActPush {
  PlanPush plan;
  float n, inv_n;
};
struct ActBackwardPush {
  PlanPush plan;
  float n, inv_n;
  uint32_t accumulate;
};

float weight_qp(int bits) {
  check_bits("minmax weights", bits);
  if (bits < 2) throw Error("minmax weights: symmetric quantization needs bits >= 2: 1 bit leaves Qp = 0");
  return float((1 << (bits - 1)) - 1);
}

ReduceScope act_scope(const MinMaxConfig& cfg) { return quant_scope(QuantTarget::Activation, cfg.per_channel); }

void check_act(const char* op, const Tensor& x, const Tensor& range, const MinMaxConfig& cfg) {
  check_bits(op, cfg.bits);
  detail::require_shape(op, x, "x", x.shape());
  const int64_t channels = minmax_channel_count(QuantTarget::Activation, cfg, x.shape());
  detail::require_numel(op, range, "range", 2 * channels);
}

// Affine parameters of one channel, exactly as affine_params() in quant_minmax.glsl.
struct Affine {
  float s, inv_s, zp;
};
Affine affine(float rmin, float rmax, const Levels& L) {
  const float lo = std::min(rmin, 0.f), hi = std::max(rmax, 0.f);
  const float width = (hi - lo) * L.inv_n;
  Affine a;
  a.s = std::max(width, kMinScale);
  a.inv_s = 1.f / a.s;
  a.zp = std::min(std::max(round_half_away(-lo * a.inv_s), 0.f), L.n);
  return a;
}

}  // namespace

int64_t minmax_channel_count(QuantTarget target, const MinMaxConfig& cfg, const std::vector<int>& shape) {
  return detail::channel_count("minmax", shape, quant_scope(target, cfg.per_channel));
}

void minmax_weight_forward(Recording& rec, const Tensor& w, Tensor& wq, Tensor& stat, Tensor& scratch,
                           const MinMaxConfig& cfg) {
  const char* op = "minmax_weight_forward";
  const float qp = weight_qp(cfg.bits);
  detail::require_shape(op, w, "w", w.shape());
  detail::require_shape(op, wq, "wq", w.shape());
  const ReduceScope scope = quant_scope(QuantTarget::Weight, cfg.per_channel);
  detail::require_numel(op, stat, "stat", minmax_channel_count(QuantTarget::Weight, cfg, w.shape()));
  Context& ctx = rec.context();
  detail::require_scratch(op, scratch, ctx, w.shape(), scope);
  nn::ReduceOptions opt;
  opt.scope = scope;
  nn::reduce_max_abs(rec, w, stat, scratch, opt);
  const Plan plan = detail::make_plan(ctx, w.shape(), scope, PlanKind::Elementwise, false);
  WeightPush push{plan.push, qp, 1.f / qp};
  detail::dispatch_plan(rec, "quant_minmax_w", plan, {w.view(), stat.view(), wq.view()}, push, "minmax_w");
}

void minmax_weight_backward(Recording& rec, const Tensor& dwq, Tensor& dw, bool accumulate) {
  detail::require_shape("minmax_weight_backward", dwq, "dwq", dwq.shape());
  detail::require_shape("minmax_weight_backward", dw, "dw", dwq.shape());
  if (accumulate)
    nn::accumulate(rec, dwq, dw);
  else
    rec.copy(dwq.view(), dw.view(), "minmax_w_bwd");
}

Tensor make_minmax_range(Context& ctx, int64_t channels) {
  Tensor range(ctx, {2, int(channels)});
  std::vector<float> empty(size_t(2 * channels), std::numeric_limits<float>::infinity());
  std::fill(empty.begin() + channels, empty.end(), -std::numeric_limits<float>::infinity());
  range.upload(empty);
  return range;
}

void minmax_observe(Recording& rec, const Tensor& x, Tensor& range, Tensor& scratch, const MinMaxConfig& cfg,
                    float momentum) {
  const char* op = "minmax_observe";
  check_act(op, x, range, cfg);
  Context& ctx = rec.context();
  detail::require_scratch(op, scratch, ctx, x.shape(), act_scope(cfg));
  const Plan plan = detail::make_plan(ctx, x.shape(), act_scope(cfg), PlanKind::Reduce, true);
  detail::dispatch_plan(rec, "quant_minmax_observe", plan, {x.view(), scratch.view()}, plan.push, "minmax observe");
  detail::record_minmax_final(rec, plan, scratch, range, momentum, "minmax observe range");
}

void minmax_act_forward(Recording& rec, const Tensor& x, Tensor& y, Tensor& range, Tensor& scratch,
                        const MinMaxConfig& cfg, bool training, float momentum) {
  const char* op = "minmax_act_forward";
  check_act(op, x, range, cfg);
  detail::require_shape(op, y, "y", x.shape());
  if (training) minmax_observe(rec, x, range, scratch, cfg, momentum);
  const Levels L = levels(cfg.bits);
  const Plan plan = detail::make_plan(rec.context(), x.shape(), act_scope(cfg), PlanKind::Elementwise, true);
  ActPush push{plan.push, L.n, L.inv_n};
  detail::dispatch_plan(rec, "quant_minmax_a", plan, {x.view(), range.view(), y.view()}, push, "minmax_a");
}

void minmax_act_backward(Recording& rec, const Tensor& x, const Tensor& range, const Tensor& dy, Tensor& dx,
                         bool accumulate, const MinMaxConfig& cfg) {
  const char* op = "minmax_act_backward";
  check_act(op, x, range, cfg);
  detail::require_shape(op, dy, "dy", x.shape());
  detail::require_shape(op, dx, "dx", x.shape());
  const Levels L = levels(cfg.bits);
  const Plan plan = detail::make_plan(rec.context(), x.shape(), act_scope(cfg), PlanKind::Elementwise, true);
  ActBackwardPush push{plan.push, L.n, L.inv_n, accumulate ? 1u : 0u};
  detail::dispatch_plan(rec, "quant_minmax_a_bwd", plan, {x.view(), range.view(), dy.view(), dx.view()}, push,
                        "minmax_a_bwd");
}

namespace ref {

std::vector<float> minmax_weight_stat(const std::vector<float>& w, const std::vector<int>& shape,
                                      const MinMaxConfig& cfg) {
  const ReduceScope scope = quant_scope(QuantTarget::Weight, cfg.per_channel);
  const std::vector<int> channel = channel_of_elements(shape, scope);
  std::vector<float> stat(size_t(detail::channel_count("ref::minmax_weight_stat", shape, scope)), 0.f);
  for (size_t i = 0; i < w.size(); ++i) stat[size_t(channel[i])] = std::max(stat[size_t(channel[i])], std::fabs(w[i]));
  return stat;
}

Quantized minmax_weight_forward(const std::vector<float>& w, const std::vector<int>& shape,
                                const std::vector<float>& stat, const MinMaxConfig& cfg) {
  const float qp = weight_qp(cfg.bits), inv_qp = 1.f / qp;
  const std::vector<int> channel = channel_of_elements(shape, quant_scope(QuantTarget::Weight, cfg.per_channel));
  Quantized out{std::vector<float>(w.size()), std::vector<float>(w.size())};
  for (size_t i = 0; i < w.size(); ++i) {
    const float s = std::max(stat[size_t(channel[i])], kMinScale) * inv_qp;
    const float r = w[i] * (1.f / s);
    out.r[i] = r;
    out.y[i] = round_half_away(std::min(std::max(r, -qp), qp)) * s;
  }
  return out;
}

void minmax_observe(const std::vector<float>& x, const std::vector<int>& shape, std::vector<float>& range,
                    const MinMaxConfig& cfg, float momentum) {
  const std::vector<int> channel = channel_of_elements(shape, act_scope(cfg));
  const size_t channels = range.size() / 2;
  std::vector<float> lo(channels, std::numeric_limits<float>::infinity());
  std::vector<float> hi(channels, -std::numeric_limits<float>::infinity());
  for (size_t i = 0; i < x.size(); ++i) {
    lo[size_t(channel[i])] = std::min(lo[size_t(channel[i])], x[i]);
    hi[size_t(channel[i])] = std::max(hi[size_t(channel[i])], x[i]);
  }
  for (size_t c = 0; c < channels; ++c) {
    float& rmin = range[c];
    float& rmax = range[channels + c];
    if (rmin > rmax) {
      rmin = lo[c];
      rmax = hi[c];
    } else {
      rmin = rmin + momentum * (lo[c] - rmin);
      rmax = rmax + momentum * (hi[c] - rmax);
    }
  }
}

Quantized minmax_act_forward(const std::vector<float>& x, const std::vector<int>& shape,
                             const std::vector<float>& range, const MinMaxConfig& cfg) {
  const Levels L = levels(cfg.bits);
  const std::vector<int> channel = channel_of_elements(shape, act_scope(cfg));
  const size_t channels = range.size() / 2;
  Quantized out{std::vector<float>(x.size()), std::vector<float>(x.size())};
  for (size_t i = 0; i < x.size(); ++i) {
    const size_t c = size_t(channel[i]);
    const Affine a = affine(range[c], range[channels + c], L);
    const float r = x[i] * a.inv_s;
    const float qi = round_half_away(r) + a.zp;
    out.r[i] = r;
    out.y[i] = (std::min(std::max(qi, 0.f), L.n) - a.zp) * a.s;
  }
  return out;
}

std::vector<float> minmax_act_backward(const std::vector<float>& x, const std::vector<int>& shape,
                                       const std::vector<float>& range, const std::vector<float>& g,
                                       const MinMaxConfig& cfg) {
  const Levels L = levels(cfg.bits);
  const std::vector<int> channel = channel_of_elements(shape, act_scope(cfg));
  const size_t channels = range.size() / 2;
  std::vector<float> dx(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const size_t c = size_t(channel[i]);
    const Affine a = affine(range[c], range[channels + c], L);
    const float qi = round_half_away(x[i] * a.inv_s) + a.zp;
    dx[i] = qi >= 0.f && qi <= L.n ? g[i] : 0.f;
  }
  return dx;
}

}  // namespace ref

// ---- the quantizer the network calls, and its registration (registry.h) ---------------
namespace {
using nn::ActQuantizer;
using nn::LayerRole;
using nn::NamedTensors;
using nn::WeightQuantizer;

class MinMaxWeight : public WeightQuantizer {
 public:
  MinMaxWeight(Context& ctx, const std::vector<int>& shape, int bits) {
    cfg_.bits = bits;
    cfg_.per_channel = true;
    stat_ = Tensor(ctx, {int(minmax_channel_count(QuantTarget::Weight, cfg_, shape))});
    scratch_ = make_quant_scratch(ctx, shape, quant_scope(QuantTarget::Weight, true));
  }
  void forward(Recording& rec, const Tensor& w, Tensor& wq, bool) override {
    minmax_weight_forward(rec, w, wq, stat_, scratch_, cfg_);
  }
  void backward(Recording& rec, const Tensor&, const Tensor& dwq, Tensor& dw) override {
    minmax_weight_backward(rec, dwq, dw, false);
  }
  Kind kind() const override { return {"minmax", cfg_.bits, false}; }

 private:
  MinMaxConfig cfg_;
  Tensor stat_, scratch_;
};

// ReLU first (the range then starts at 0, as the full-precision net's activation does).
class MinMaxAct : public ActQuantizer {
 public:
  MinMaxAct(Context& ctx, const std::string& name, const std::vector<int>& shape, int bits)
      : name_(name), relu_(ctx, shape), d_relu_(ctx, shape), range_(make_minmax_range(ctx, 1)),
        scratch_(make_quant_scratch(ctx, shape)) {
    cfg_.bits = bits;
  }
  void forward(Recording& rec, const Tensor& x, Tensor& y, bool train) override {
    nn::relu_forward(rec, x, relu_);
    minmax_act_forward(rec, relu_, y, range_, scratch_, cfg_, train);
  }
  void backward(Recording& rec, const Tensor& x, const Tensor& dy, Tensor& dx, bool acc) override {
    minmax_act_backward(rec, relu_, range_, dy, d_relu_, false, cfg_);
    nn::relu_backward(rec, x, d_relu_, dx, acc);
  }
  NamedTensors state() override { return {{name_ + ".range", &range_}}; }
  std::string describe() const override { return "minmax-act " + bits_str(cfg_.bits); }

 private:
  std::string name_;
  MinMaxConfig cfg_;
  Tensor relu_, d_relu_, range_, scratch_;
};
}  // namespace

void register_minmax(Registry& r) {
  r.weights.push_back({"minmax", "symmetric min-max, one scale per output channel", 2, false,
                       [](Context& ctx, const std::string&, const Tensor& w, int bits, bool) {
                         return std::unique_ptr<WeightQuantizer>(new MinMaxWeight(ctx, w.shape(), bits));
                       }});
  r.acts.push_back({"minmax", "ReLU, then min-max over a running range (EMA 0.01)",
                    [](Context& ctx, const std::string& name, const std::vector<int>& shape, int bits, LayerRole) {
                      return std::unique_ptr<ActQuantizer>(new MinMaxAct(ctx, name, shape, bits));
                    }});
}
}  // namespace vkqat::quant

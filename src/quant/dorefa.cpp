#include "quant/dorefa.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "backend/error.h"
#include "quant/registry.h"
#include "quant/plan.h"

namespace vkqat::quant {
namespace {

using detail::Plan;
using detail::PlanKind;
using detail::PlanPush;

struct WeightForwardPush {
  PlanPush plan;
  uint32_t binary;
  float n, two_inv_n;
};
struct WeightBackwardPush {
  PlanPush plan;
  uint32_t binary, accumulate;
};
struct ActForwardPush {
  PlanPush plan;
  float n, inv_n;
};
struct ActBackwardPush {
  PlanPush plan;
  uint32_t accumulate;
};

Plan elementwise_plan(const Context& ctx, const Tensor& t, bool vec4) {
  return detail::make_plan(ctx, t.shape(), ReduceScope::Tensor, PlanKind::Elementwise, vec4);
}

}  // namespace

void dorefa_weight_forward(Recording& rec, const Tensor& w, Tensor& wq, Tensor& stat, Tensor& scratch, int bits) {
  const char* op = "dorefa_weight_forward";
  check_bits(op, bits);
  detail::require_shape(op, w, "w", w.shape());
  detail::require_shape(op, wq, "wq", w.shape());
  detail::require_numel(op, stat, "stat", 1);
  Context& ctx = rec.context();
  detail::require_scratch(op, scratch, ctx, w.shape(), ReduceScope::Tensor);
  const bool binary = bits == 1;
  if (binary) {
    const Plan sum_plan = detail::make_plan(ctx, w.shape(), ReduceScope::Tensor, PlanKind::Reduce, true);
    detail::dispatch_plan(rec, "quant_abssum", sum_plan, {w.view(), scratch.view()}, sum_plan.push,
                          "dorefa_w sum|w|");
    detail::record_sum_final(rec, sum_plan, scratch, stat, float(1.0 / double(w.numel())), false,
                             std::numeric_limits<float>::lowest(), "dorefa_w mean|w|");
  } else {
    nn::reduce_max_abs(rec, w, stat, scratch);
  }
  const Levels L = levels(bits);
  const Plan plan = elementwise_plan(ctx, w, false);
  WeightForwardPush push{plan.push, binary ? 1u : 0u, L.n, 2.f * L.inv_n};
  detail::dispatch_plan(rec, "quant_dorefa_w", plan, {w.view(), stat.view(), wq.view()}, push, "dorefa_w");
}

void dorefa_weight_backward(Recording& rec, const Tensor& w, const Tensor& stat, const Tensor& dwq, Tensor& dw,
                            bool accumulate, int bits) {
  const char* op = "dorefa_weight_backward";
  check_bits(op, bits);
  detail::require_shape(op, w, "w", w.shape());
  detail::require_shape(op, dwq, "dwq", w.shape());
  detail::require_shape(op, dw, "dw", w.shape());
  detail::require_numel(op, stat, "stat", 1);
  const Plan plan = elementwise_plan(rec.context(), w, false);
  WeightBackwardPush push{plan.push, bits == 1 ? 1u : 0u, accumulate ? 1u : 0u};
  detail::dispatch_plan(rec, "quant_dorefa_w_bwd", plan, {w.view(), stat.view(), dwq.view(), dw.view()}, push,
                        "dorefa_w_bwd");
}

void dorefa_act_forward(Recording& rec, const Tensor& x, Tensor& y, int bits) {
  const char* op = "dorefa_act_forward";
  check_bits(op, bits);
  detail::require_shape(op, x, "x", x.shape());
  detail::require_shape(op, y, "y", x.shape());
  const Levels L = levels(bits);
  const Plan plan = elementwise_plan(rec.context(), x, true);
  ActForwardPush push{plan.push, L.n, L.inv_n};
  detail::dispatch_plan(rec, "quant_dorefa_a", plan, {x.view(), y.view()}, push, "dorefa_a");
}

void dorefa_act_backward(Recording& rec, const Tensor& x, const Tensor& dy, Tensor& dx, bool accumulate) {
  const char* op = "dorefa_act_backward";
  detail::require_shape(op, x, "x", x.shape());
  detail::require_shape(op, dy, "dy", x.shape());
  detail::require_shape(op, dx, "dx", x.shape());
  const Plan plan = elementwise_plan(rec.context(), x, true);
  ActBackwardPush push{plan.push, accumulate ? 1u : 0u};
  detail::dispatch_plan(rec, "quant_dorefa_a_bwd", plan, {x.view(), dy.view(), dx.view()}, push, "dorefa_a_bwd");
}

namespace ref {

float dorefa_weight_stat(const std::vector<float>& w, int bits) {
  check_bits("ref::dorefa_weight_stat", bits);
  double acc = 0;
  for (float v : w) acc = bits == 1 ? acc + std::fabs(double(v)) : std::max(acc, std::fabs(double(v)));
  return float(bits == 1 ? acc / double(w.size()) : acc);
}

Quantized dorefa_weight_forward(const std::vector<float>& w, float stat, int bits) {
  const Levels L = levels(bits);
  const float two_inv_n = 2.f * L.inv_n;
  float m, unused;
  tanh_sech2(stat, m, unused);
  const float half_inv_m = m > 0.f ? 0.5f / m : 0.f;
  Quantized out{std::vector<float>(w.size()), std::vector<float>(w.size())};
  for (size_t i = 0; i < w.size(); ++i) {
    if (bits == 1) {
      out.y[i] = (w[i] > 0.f ? 1.f : w[i] < 0.f ? -1.f : 0.f) * stat;
      out.r[i] = w[i] > 0.f ? 1.f : w[i] < 0.f ? -1.f : 0.f;
    } else {
      float t, sech2;
      tanh_sech2(w[i], t, sech2);
      const float r = (t * half_inv_m + 0.5f) * L.n;
      out.r[i] = r;
      out.y[i] = round_half_away(r) * two_inv_n - 1.f;
    }
  }
  return out;
}

std::vector<double> dorefa_weight_backward(const std::vector<float>& w, float stat, const std::vector<float>& g,
                                           int bits) {
  check_bits("ref::dorefa_weight_backward", bits);
  const double m = std::tanh(double(stat));
  std::vector<double> dw(w.size());
  for (size_t i = 0; i < w.size(); ++i) {
    const double t = std::tanh(double(w[i]));
    dw[i] = bits == 1 ? double(g[i]) : (m > 0 ? double(g[i]) * (1.0 - t * t) / m : 0.0);
  }
  return dw;
}

Quantized dorefa_act_forward(const std::vector<float>& x, int bits) {
  const Levels L = levels(bits);
  Quantized out{std::vector<float>(x.size()), std::vector<float>(x.size())};
  for (size_t i = 0; i < x.size(); ++i) {
    const float r = std::min(std::max(x[i], 0.f), 1.f) * L.n;
    out.r[i] = r;
    out.y[i] = round_half_away(r) * L.inv_n;
  }
  return out;
}

std::vector<float> dorefa_act_backward(const std::vector<float>& x, const std::vector<float>& g) {
  std::vector<float> dx(x.size());
  for (size_t i = 0; i < x.size(); ++i) dx[i] = x[i] >= 0.f && x[i] <= 1.f ? g[i] : 0.f;
  return dx;
}

}  // namespace ref

// ---- the quantizer the network calls, and its registration (registry.h) ---------------
namespace {
using nn::ActQuantizer;
using nn::LayerRole;
using nn::WeightQuantizer;

class DorefaWeight : public WeightQuantizer {
 public:
  DorefaWeight(Context& ctx, const std::vector<int>& shape, int bits)
      : bits_(bits), stat_(ctx, {1}), scratch_(make_quant_scratch(ctx, shape)) {}
  void forward(Recording& rec, const Tensor& w, Tensor& wq, bool) override {
    dorefa_weight_forward(rec, w, wq, stat_, scratch_, bits_);
  }
  void backward(Recording& rec, const Tensor& w, const Tensor& dwq, Tensor& dw) override {
    dorefa_weight_backward(rec, w, stat_, dwq, dw, false, bits_);
  }
  Kind kind() const override { return {"dorefa", bits_, false}; }
  // k >= 2: wq = (2 level - n) / n; k = 1: wq = +-mean|w| (the stat).
  std::optional<nn::Grid> grid() const override {
    if (bits_ == 1) return nn::Grid{&stat_, 1.f};
    return nn::Grid{nullptr, levels(bits_).inv_n};
  }

 private:
  int bits_;
  Tensor stat_, scratch_;
};

class DorefaAct : public ActQuantizer {
 public:
  explicit DorefaAct(int bits) : bits_(bits) {}
  void forward(Recording& rec, const Tensor& x, Tensor& y, bool) override { dorefa_act_forward(rec, x, y, bits_); }
  void backward(Recording& rec, const Tensor& x, const Tensor& dy, Tensor& dx, bool acc) override {
    dorefa_act_backward(rec, x, dy, dx, acc);
  }
  std::string describe() const override { return "dorefa-act " + bits_str(bits_); }
  std::optional<nn::Grid> grid() const override { return nn::Grid{nullptr, levels(bits_).inv_n}; }

 private:
  int bits_;
};
}  // namespace

void register_dorefa(Registry& r) {
  r.weights.push_back({"dorefa", "tanh, normalised to [0, 1] by max|tanh|, k-bit levels in [-1, 1] (k = 1: sign * mean|w|)", 1,
                       false, [](Context& ctx, const std::string&, const Tensor& w, int bits, bool) {
                         return std::unique_ptr<WeightQuantizer>(new DorefaWeight(ctx, w.shape(), bits));
                       }});
  r.acts.push_back({"dorefa", "clip to [0, 1], k-bit levels", [](Context&, const std::string&, const std::vector<int>&,
                                                                 int bits, LayerRole) {
                      return std::unique_ptr<ActQuantizer>(new DorefaAct(bits));
                    }});
}
}  // namespace vkqat::quant

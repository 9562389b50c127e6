#include "quant/lsq.h"

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

struct ForwardPush {
  PlanPush plan;
  float qn, qp;
};
struct BackwardPush {
  PlanPush plan;
  float qn, qp;
  uint32_t accumulate;
};

ReduceScope scope_of(const LsqConfig& cfg) { return quant_scope(cfg.target, cfg.per_channel); }

// Validates v, s (and the other tensors of v's shape) for `op`.
void check_tensors(const char* op, const LsqConfig& cfg, const Tensor& v, const Tensor& s) {
  lsq_range(cfg);
  detail::require_shape(op, v, "v", v.shape());
  if (cfg.target == QuantTarget::Activation && v.rank() < 2)
    throw Error(std::string(op) + ": activation v " + v.shape_str() + " needs a batch dimension (N, C, ...)");
  detail::require_numel(op, s, "step size s", lsq_step_count(cfg, v.shape()));
}

}  // namespace

LsqRange lsq_range(const LsqConfig& cfg) {
  check_bits("lsq", cfg.bits);
  if (cfg.target == QuantTarget::Weight || cfg.symmetric) {
    if (cfg.bits < 2) throw Error("lsq: signed quantization needs bits >= 2: 1 bit leaves Qp = 2^0 - 1 = 0");
    return LsqRange{float(1 << (cfg.bits - 1)), float((1 << (cfg.bits - 1)) - 1)};
  }
  return LsqRange{0.f, float((1 << cfg.bits) - 1)};
}

int64_t lsq_step_count(const LsqConfig& cfg, const std::vector<int>& shape) {
  return detail::channel_count("lsq", shape, scope_of(cfg));
}

int64_t lsq_elements_per_step(const LsqConfig& cfg, const std::vector<int>& shape) {
  int64_t numel = 1;
  for (int d : shape) numel *= d;
  int64_t per_step = numel / lsq_step_count(cfg, shape);
  if (cfg.target == QuantTarget::Activation) per_step /= shape.at(0);  // batch excluded
  return per_step;
}

float lsq_grad_scale(const LsqConfig& cfg, const std::vector<int>& shape) {
  const LsqRange range = lsq_range(cfg);
  return float(1.0 / std::sqrt(double(lsq_elements_per_step(cfg, shape)) * double(range.qp)));
}

void lsq_forward(Recording& rec, const Tensor& v, const Tensor& s, Tensor& vq, const LsqConfig& cfg) {
  const char* op = "lsq_forward";
  check_tensors(op, cfg, v, s);
  detail::require_shape(op, vq, "vq", v.shape());
  const LsqRange range = lsq_range(cfg);
  const Plan plan = detail::make_plan(rec.context(), v.shape(), scope_of(cfg), PlanKind::Elementwise, true);
  ForwardPush push{plan.push, range.qn, range.qp};
  detail::dispatch_plan(rec, "quant_lsq", plan, {v.view(), s.view(), vq.view()}, push, "lsq");
}

void lsq_backward(Recording& rec, const Tensor& v, const Tensor& s, const Tensor& dvq, Tensor& dv, bool accumulate_dv,
                  Tensor& ds, bool accumulate_ds, Tensor& scratch, const LsqConfig& cfg) {
  const char* op = "lsq_backward";
  check_tensors(op, cfg, v, s);
  detail::require_shape(op, dvq, "dvq", v.shape());
  detail::require_shape(op, dv, "dv", v.shape());
  detail::require_numel(op, ds, "ds", s.numel());
  Context& ctx = rec.context();
  detail::require_scratch(op, scratch, ctx, v.shape(), scope_of(cfg));
  const LsqRange range = lsq_range(cfg);
  const Plan plan = detail::make_plan(ctx, v.shape(), scope_of(cfg), PlanKind::Reduce, true);
  BackwardPush push{plan.push, range.qn, range.qp, accumulate_dv ? 1u : 0u};
  detail::dispatch_plan(rec, "quant_lsq_bwd", plan, {v.view(), s.view(), dvq.view(), dv.view(), scratch.view()}, push,
                        "lsq_bwd");
  detail::record_sum_final(rec, plan, scratch, ds, lsq_grad_scale(cfg, v.shape()), accumulate_ds,
                           std::numeric_limits<float>::lowest(), "lsq_bwd ds");
}

void lsq_init_step(Recording& rec, const Tensor& v, Tensor& s, Tensor& scratch, const LsqConfig& cfg) {
  const char* op = "lsq_init_step";
  check_tensors(op, cfg, v, s);
  Context& ctx = rec.context();
  detail::require_scratch(op, scratch, ctx, v.shape(), scope_of(cfg));
  const LsqRange range = lsq_range(cfg);
  const Plan plan = detail::make_plan(ctx, v.shape(), scope_of(cfg), PlanKind::Reduce, true);
  detail::dispatch_plan(rec, "quant_abssum", plan, {v.view(), scratch.view()}, plan.push, "lsq_init sum|v|");
  // s = sum|v| * 2 / (count sqrt(Qp)), count = all elements of the step's channel (batch included)
  const float scale = float(2.0 / (double(plan.elems_per_channel) * std::sqrt(double(range.qp))));
  detail::record_sum_final(rec, plan, scratch, s, scale, false, kMinScale, "lsq_init s");
}

namespace ref {

Quantized lsq_forward(const std::vector<float>& v, const std::vector<int>& shape, const std::vector<float>& s,
                      const LsqConfig& cfg) {
  const LsqRange range = lsq_range(cfg);
  const std::vector<int> channel = channel_of_elements(shape, scope_of(cfg));
  Quantized out{std::vector<float>(v.size()), std::vector<float>(v.size())};
  for (size_t i = 0; i < v.size(); ++i) {
    const float step = std::max(s[size_t(channel[i])], kMinScale);
    const float inv_s = 1.f / step;
    const float r = v[i] * inv_s;
    out.r[i] = r;
    out.y[i] = round_half_away(std::min(std::max(r, -range.qn), range.qp)) * step;
  }
  return out;
}

LsqGrads lsq_backward(const std::vector<float>& v, const std::vector<int>& shape, const std::vector<float>& s,
                      const std::vector<float>& g, const LsqConfig& cfg) {
  const LsqRange range = lsq_range(cfg);
  const std::vector<int> channel = channel_of_elements(shape, scope_of(cfg));
  LsqGrads out;
  out.dv.resize(v.size());
  out.ds.assign(s.size(), 0.0);
  for (size_t i = 0; i < v.size(); ++i) {
    const float step = std::max(s[size_t(channel[i])], kMinScale);
    const float r = v[i] * (1.f / step);  // the mask as the shader decides it
    const bool inside = r >= -range.qn && r <= range.qp;
    out.dv[i] = inside ? g[i] : 0.f;
    const double rd = double(v[i]) / double(step);
    const double term = inside ? (rd < 0 ? -1.0 : 1.0) * std::floor(std::fabs(rd) + 0.5) - rd
                               : (r < -range.qn ? -double(range.qn) : double(range.qp));
    out.ds[size_t(channel[i])] += double(g[i]) * term;
  }
  const double gs = 1.0 / std::sqrt(double(lsq_elements_per_step(cfg, shape)) * double(range.qp));
  for (double& d : out.ds) d *= gs;
  return out;
}

std::vector<double> lsq_init_step(const std::vector<float>& v, const std::vector<int>& shape, const LsqConfig& cfg) {
  const LsqRange range = lsq_range(cfg);
  const std::vector<int> channel = channel_of_elements(shape, scope_of(cfg));
  const int64_t steps = lsq_step_count(cfg, shape);
  std::vector<double> sum(size_t(steps), 0.0);
  for (size_t i = 0; i < v.size(); ++i) sum[size_t(channel[i])] += std::fabs(double(v[i]));
  const double count = double(v.size()) / double(steps);
  for (double& x : sum) x = std::max(2.0 * x / count / std::sqrt(double(range.qp)), double(kMinScale));
  return sum;
}

}  // namespace ref

// ---- the quantizer the network calls, and its registration (registry.h) ---------------
namespace {
using nn::ActQuantizer;
using nn::LayerRole;
using nn::Parameter;
using nn::WeightQuantizer;

class LsqWeight : public WeightQuantizer {
 public:
  LsqWeight(Context& ctx, const std::string& layer, const Tensor& w, int bits, bool per_channel) {
    cfg_.bits = bits;
    cfg_.target = QuantTarget::Weight;
    cfg_.per_channel = per_channel;
    step_ = Parameter(ctx, layer + ".weight_step", {int(lsq_step_count(cfg_, w.shape()))}, false);
    scratch_ = make_quant_scratch(ctx, w.shape(), quant_scope(cfg_.target, cfg_.per_channel));
    Recording init(ctx);  // s = 2 mean|w| / sqrt(Qp) from the initial weights
    lsq_init_step(init, w, step_.value, scratch_, cfg_);
    init.run();
  }
  void forward(Recording& rec, const Tensor& w, Tensor& wq, bool) override { lsq_forward(rec, w, step_.value, wq, cfg_); }
  void backward(Recording& rec, const Tensor& w, const Tensor& dwq, Tensor& dw) override {
    lsq_backward(rec, w, step_.value, dwq, dw, false, step_.grad, false, scratch_, cfg_);
  }
  std::vector<Parameter*> parameters() override { return {&step_}; }
  Kind kind() const override { return {cfg_.per_channel ? "lsq-channel" : "lsq", cfg_.bits, false}; }

 private:
  LsqConfig cfg_;
  Parameter step_;
  Tensor scratch_;
};

class LsqAct : public ActQuantizer {
 public:
  LsqAct(Context& ctx, const std::string& name, const std::vector<int>& shape, int bits, bool symmetric) {
    cfg_.bits = bits;
    cfg_.target = QuantTarget::Activation;
    cfg_.symmetric = symmetric;
    try {
      lsq_range(cfg_);  // 1-bit signed: an error naming the activation now
    } catch (const Error& e) {
      throw Error(name + ": " + e.what());
    }
    step_ = Parameter(ctx, name + ".step", {int(lsq_step_count(cfg_, shape))}, false);
    step_.value.upload(std::vector<float>(size_t(step_.value.numel()), 1.f));  // replaced by the data init
    scratch_ = make_quant_scratch(ctx, shape, quant_scope(cfg_.target, cfg_.per_channel));
  }
  void forward(Recording& rec, const Tensor& x, Tensor& y, bool) override {
    if (data_init_) {
      lsq_init_step(rec, x, step_.value, scratch_, cfg_);
      if (merge_) merge_(rec, step_.value);
    }
    lsq_forward(rec, x, step_.value, y, cfg_);
  }
  void backward(Recording& rec, const Tensor& x, const Tensor& dy, Tensor& dx, bool acc) override {
    lsq_backward(rec, x, step_.value, dy, dx, acc, step_.grad, false, scratch_, cfg_);
  }
  std::vector<Parameter*> parameters() override { return {&step_}; }
  std::string describe() const override {
    return std::string("lsq-act ") + (cfg_.symmetric ? "signed " : "") + bits_str(cfg_.bits);
  }
  bool wants_data_init() const override { return true; }
  void set_data_init(bool on, InitMerge merge) override { data_init_ = on, merge_ = std::move(merge); }

 private:
  LsqConfig cfg_;
  Parameter step_;
  Tensor scratch_;
  bool data_init_ = false;
  InitMerge merge_;
};
}  // namespace

void register_lsq(Registry& r) {
  r.weights.push_back({"lsq", "learned step size (signed), per tensor or per output channel", 2, true,
                       [](Context& ctx, const std::string& layer, const Tensor& w, int bits, bool per_channel) {
                         return std::unique_ptr<WeightQuantizer>(new LsqWeight(ctx, layer, w, bits, per_channel));
                       }});
  r.acts.push_back({"lsq", "learned step size (unsigned), initialised from the first batch",
                    [](Context& ctx, const std::string& name, const std::vector<int>& shape, int bits, LayerRole) {
                      return std::unique_ptr<ActQuantizer>(new LsqAct(ctx, name, shape, bits, false));
                    },
                    [](Context& ctx, const std::string& name, const std::vector<int>& shape, int bits) {
                      return std::unique_ptr<ActQuantizer>(new LsqAct(ctx, name, shape, bits, true));
                    }});
}
}  // namespace vkqat::quant

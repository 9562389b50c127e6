#include "quant/pact.h"

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
  float n, inv_n;
};
struct BackwardPush {
  PlanPush plan;
  float n, inv_n;
  uint32_t accumulate, calibrated;
};

}  // namespace

namespace {
// Both forms share these: only the kernel and the level count differ.
void record_forward(Recording& rec, const char* op, const char* kernel, const Tensor& x, const Tensor& alpha, Tensor& y,
                    Levels L) {
  detail::require_shape(op, x, "x", x.shape());
  detail::require_shape(op, y, "y", x.shape());
  detail::require_numel(op, alpha, "alpha", 1);
  const Plan plan = detail::make_plan(rec.context(), x.shape(), ReduceScope::Tensor, PlanKind::Elementwise, true);
  ForwardPush push{plan.push, L.n, L.inv_n};
  detail::dispatch_plan(rec, kernel, plan, {x.view(), alpha.view(), y.view()}, push, op);
}

void record_backward(Recording& rec, const char* op, const char* kernel, const Tensor& x, const Tensor& alpha,
                     const Tensor& dy, Tensor& dx, bool accumulate_dx, Tensor& dalpha, bool accumulate_dalpha,
                     Tensor& scratch, Levels L, PactGradient gradient) {
  detail::require_shape(op, x, "x", x.shape());
  detail::require_shape(op, dy, "dy", x.shape());
  detail::require_shape(op, dx, "dx", x.shape());
  detail::require_numel(op, alpha, "alpha", 1);
  detail::require_numel(op, dalpha, "dalpha", 1);
  Context& ctx = rec.context();
  detail::require_scratch(op, scratch, ctx, x.shape(), ReduceScope::Tensor);
  const Plan plan = detail::make_plan(ctx, x.shape(), ReduceScope::Tensor, PlanKind::Reduce, true);
  BackwardPush push{plan.push, L.n, L.inv_n, accumulate_dx ? 1u : 0u,
                    gradient == PactGradient::Calibrated ? 1u : 0u};
  detail::dispatch_plan(rec, kernel, plan, {x.view(), alpha.view(), dy.view(), dx.view(), scratch.view()}, push, op);
  detail::record_sum_final(rec, plan, scratch, dalpha, 1.f, accumulate_dalpha, std::numeric_limits<float>::lowest(),
                           "pact_bwd dalpha");
}
}  // namespace

void pact_forward(Recording& rec, const Tensor& x, const Tensor& alpha, Tensor& y, int bits) {
  check_bits("pact_forward", bits);
  record_forward(rec, "pact_forward", "quant_pact", x, alpha, y, levels(bits));
}

void pact_backward(Recording& rec, const Tensor& x, const Tensor& alpha, const Tensor& dy, Tensor& dx,
                   bool accumulate_dx, Tensor& dalpha, bool accumulate_dalpha, Tensor& scratch, int bits,
                   PactGradient gradient) {
  check_bits("pact_backward", bits);
  record_backward(rec, "pact_backward", "quant_pact_bwd", x, alpha, dy, dx, accumulate_dx, dalpha, accumulate_dalpha,
                  scratch, levels(bits), gradient);
}

Levels pact_signed_levels(const char* op, int bits) {
  if (bits < 2 || bits > kMaxKernelBits)
    throw Error(std::string(op) + ": signed activations need 2.." + std::to_string(kMaxKernelBits) +
                " bits (1 bit has no level per side), got " + std::to_string(bits));
  const float n = float((1 << (bits - 1)) - 1);
  return {n, 1.f / n};
}

void pact_signed_forward(Recording& rec, const Tensor& x, const Tensor& alpha, Tensor& y, int bits) {
  const char* op = "pact_signed_forward";
  record_forward(rec, op, "quant_pact_signed", x, alpha, y, pact_signed_levels(op, bits));
}

void pact_signed_backward(Recording& rec, const Tensor& x, const Tensor& alpha, const Tensor& dy, Tensor& dx,
                          bool accumulate_dx, Tensor& dalpha, bool accumulate_dalpha, Tensor& scratch, int bits,
                          PactGradient gradient) {
  const char* op = "pact_signed_backward";
  record_backward(rec, op, "quant_pact_signed_bwd", x, alpha, dy, dx, accumulate_dx, dalpha, accumulate_dalpha, scratch,
                  pact_signed_levels(op, bits), gradient);
}

void pact_merge_clip_grad(Recording& rec, const Tensor& partials, Tensor& dalpha, bool accumulate) {
  const char* op = "pact_merge_clip_grad";
  detail::require_numel(op, dalpha, "dalpha", 1);
  if (!partials.defined() || partials.dtype() != nn::DType::F32 || partials.numel() < 1)
    throw Error(std::string(op) + ": partials must be a non-empty F32 tensor");
  Plan plan;  // one channel of `partials` values, as record_sum_final reads them
  plan.push.channels = 1;
  plan.push.partials = uint32_t(partials.numel());
  detail::record_sum_final(rec, plan, partials, dalpha, 1.f, accumulate, std::numeric_limits<float>::lowest(),
                           "pact_bwd dalpha");
}

namespace ref {

Quantized pact_forward(const std::vector<float>& x, float alpha_in, int bits) {
  const Levels L = levels(bits);
  const float alpha = std::max(alpha_in, kMinScale);
  const float scale = L.n / alpha, step = alpha * L.inv_n;
  Quantized out{std::vector<float>(x.size()), std::vector<float>(x.size())};
  for (size_t i = 0; i < x.size(); ++i) {
    const float r = std::min(std::max(x[i], 0.f), alpha) * scale;
    out.r[i] = r;
    out.y[i] = round_half_away(r) * step;
  }
  return out;
}

double pact_quantization_error_term(const std::vector<float>& x, float alpha_in, const std::vector<float>& g,
                                    int bits) {
  const double n = levels(bits).n, alpha = std::max(alpha_in, kMinScale);
  double sum = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    if (x[i] >= alpha) continue;
    const double u = std::max(double(x[i]), 0.0) / alpha;
    const double nu = n * u;
    const double q = (nu < 0 ? -1.0 : 1.0) * std::floor(std::fabs(nu) + 0.5) / n;
    sum += double(g[i]) * (q - u);
  }
  return sum;
}

PactGrads pact_backward(const std::vector<float>& x, float alpha_in, const std::vector<float>& g, int bits,
                        PactGradient gradient) {
  check_bits("ref::pact_backward", bits);
  const float alpha = std::max(alpha_in, kMinScale);
  PactGrads out;
  out.dx.resize(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    out.dx[i] = x[i] >= 0.f && x[i] < alpha ? g[i] : 0.f;
    if (x[i] >= alpha) out.dalpha += double(g[i]);
  }
  if (gradient == PactGradient::Calibrated) out.dalpha += pact_quantization_error_term(x, alpha_in, g, bits);
  return out;
}

Quantized pact_signed_forward(const std::vector<float>& x, float alpha_in, int bits) {
  const Levels L = pact_signed_levels("ref::pact_signed_forward", bits);
  const float alpha = std::max(alpha_in, kMinScale);
  const float scale = L.n / alpha, step = alpha * L.inv_n;
  Quantized out{std::vector<float>(x.size()), std::vector<float>(x.size())};
  for (size_t i = 0; i < x.size(); ++i) {
    const float r = std::min(std::max(x[i], -alpha), alpha) * scale;
    out.r[i] = r;
    out.y[i] = round_half_away(r) * step;
  }
  return out;
}

PactGrads pact_signed_backward(const std::vector<float>& x, float alpha_in, const std::vector<float>& g, int bits,
                               PactGradient gradient) {
  const double n = pact_signed_levels("ref::pact_signed_backward", bits).n;
  const float alpha = std::max(alpha_in, kMinScale);
  PactGrads out;
  out.dx.resize(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const bool inside = std::fabs(x[i]) <= alpha;
    out.dx[i] = inside ? g[i] : 0.f;
    if (x[i] > alpha) out.dalpha += double(g[i]);
    if (x[i] < -alpha) out.dalpha -= double(g[i]);
    if (inside && gradient == PactGradient::Calibrated) {
      const double u = double(x[i]) / double(alpha), nu = n * u;
      const double q = (nu < 0 ? -1.0 : 1.0) * std::floor(std::fabs(nu) + 0.5) / n;
      out.dalpha += double(g[i]) * (q - u);
    }
  }
  return out;
}

}  // namespace ref

// ---- the quantizer the network calls, and its registration (registry.h) ---------------
namespace {
using nn::ActQuantizer;
using nn::LayerRole;
using nn::Parameter;

class PactAct : public ActQuantizer {
 public:
  // symmetric: the signed form (a linear bottleneck's quantizer), which BN's fused passes
  // (clamping at 0) cannot apply.
  PactAct(Context& ctx, const std::string& name, const std::vector<int>& shape, int bits, float alpha0,
          PactGradient g, bool symmetric)
      : bits_(bits), gradient_(g), symmetric_(symmetric), alpha_(ctx, name + ".alpha", {1}, false),
        scratch_(make_quant_scratch(ctx, shape)) {
    if (symmetric) pact_signed_levels(name.c_str(), bits);  // 1 bit: an error naming the activation now
    alpha_.value.upload({alpha0});
  }
  void forward(Recording& rec, const Tensor& x, Tensor& y, bool) override {
    if (symmetric_)
      pact_signed_forward(rec, x, alpha_.value, y, bits_);
    else
      pact_forward(rec, x, alpha_.value, y, bits_);
  }
  void backward(Recording& rec, const Tensor& x, const Tensor& dy, Tensor& dx, bool acc) override {
    if (symmetric_)
      pact_signed_backward(rec, x, alpha_.value, dy, dx, acc, alpha_.grad, false, scratch_, bits_, gradient_);
    else
      pact_backward(rec, x, alpha_.value, dy, dx, acc, alpha_.grad, false, scratch_, bits_, gradient_);
  }
  std::optional<UniformClip> uniform_clip() const override {
    if (symmetric_) return std::nullopt;
    const Levels L = levels(bits_);
    return UniformClip{&alpha_.value, L.n, L.inv_n, gradient_ == PactGradient::Calibrated};
  }
  // Signed outputs are integers in [-n, n] times alpha / n: on a grid too (exact evaluation).
  std::optional<nn::Grid> grid() const override {
    if (!symmetric_) return ActQuantizer::grid();
    return nn::Grid{&alpha_.value, pact_signed_levels("signed PACT", bits_).inv_n};
  }
  void merge_clip_grad(Recording& rec, const Tensor& partials) override {
    pact_merge_clip_grad(rec, partials, alpha_.grad, false);
  }
  std::vector<Parameter*> parameters() override { return {&alpha_}; }
  std::string describe() const override {
    return std::string(gradient_ == PactGradient::Calibrated ? "cg-pact " : "pact ") + (symmetric_ ? "signed " : "") +
           bits_str(bits_);
  }

 private:
  int bits_;
  PactGradient gradient_;
  bool symmetric_;
  Parameter alpha_;
  Tensor scratch_;
};
}  // namespace

void register_pact(Registry& r) {
  for (PactGradient g : {PactGradient::Calibrated, PactGradient::Original}) {
    const bool cg = g == PactGradient::Calibrated;
    r.acts.push_back({cg ? "cg-pact" : "pact",
                      cg ? "learned clip alpha, SAT's calibrated alpha gradient" : "learned clip alpha, PACT's alpha gradient",
                      [g](Context& ctx, const std::string& name, const std::vector<int>& shape, int bits, LayerRole consumer) {
                        const float alpha0 = consumer == LayerRole::Last ? kPactAlphaFc : kPactAlphaConv;
                        return std::unique_ptr<ActQuantizer>(new PactAct(ctx, name, shape, bits, alpha0, g, false));
                      },
                      [g](Context& ctx, const std::string& name, const std::vector<int>& shape, int bits) {
                        return std::unique_ptr<ActQuantizer>(new PactAct(ctx, name, shape, bits, kPactAlphaConv, g, true));
                      }});
  }
}
}  // namespace vkqat::quant

#pragma once
// The finite-difference machinery of the network gradient checks (test_net_gradcheck.cpp,
// test_graph_network.cpp): a tiny network (+ aux head) and check_gradients.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>

#include "backend/recording.h"
#include "nn/model/graph_network.h"
#include "nn/model/network.h"
#include "nn/ops/cross_entropy.h"
#include "quant/common.h"
#include "quant/lsq.h"
#include "quant/policy.h"
#include "quant/registry.h"
#include "testutil.h"

namespace gradcheck {
using namespace vkqat;
using nn::Tensor;

constexpr float kAuxWeight = 0.7f;  // lambda != 1, so a mis-scaled aux gradient shows

// A tiny network (+ aux head), one recording for loss + gradients, one for the loss alone.
struct GradCheckNet {
  Context& ctx;
  std::unique_ptr<nn::Network> net;
  std::unique_ptr<nn::AuxiliaryHead> aux;
  Tensor labels, loss, correct, aux_loss, aux_correct;
  std::unique_ptr<Recording> grad_step, loss_step;
  // Parameters whose recorded gradient is by design a multiple of the loss's derivative
  // (LSQ's step-size gradient scale): the check divides it out.
  std::map<std::string, double> grad_scale;
  // Parameters finite-differenced with steps relative to their value (LSQ's step sizes, 1e-7
  // at kCheckBits): the largest relative step that moves the clip level (Qp s) less than half
  // the gap around it in the data, so that no value crosses the clip during the difference.
  std::map<std::string, double> relative_step;
  // Gradients whose backward treats a statistic of the tensor as a constant by design
  // (DoReFa's max|tanh w|, SAT's variance): the closed-form term it leaves out, added to the
  // recorded gradient (given the values) before the comparison.
  std::map<std::string, std::function<void(std::vector<float>& grad, const std::vector<float>& value)>> complete;

  static constexpr int kBatch = 3;  // the default; the labels follow the network's batch
  // The built-in model at width 2, 8x8x1 images, 10 classes.
  static nn::ModelConfig tiny(const std::string& model) {
    nn::ModelConfig mc;
    mc.name = model;
    mc.width = 2;
    mc.in_channels = 1, mc.height = 8, mc.width_px = 8, mc.classes = 10;
    return mc;
  }
  GradCheckNet(const std::string& model, bool with_aux, const std::function<void(nn::Network&)>& tweak = {})
      : GradCheckNet(nn::build_network(test::ctx(), tiny(model), kBatch), with_aux, tweak) {}
  // Any network of 10 classes.
  GradCheckNet(std::unique_ptr<nn::Network> built, bool with_aux, const std::function<void(nn::Network&)>& tweak = {})
      : ctx(test::ctx()), net(std::move(built)) {
    const int batch = int(net->logits().dim(0));
    net->init(7);
    if (tweak) tweak(*net);
    if (with_aux) {
      aux = quant::quant_plugins().aux(ctx, *net);
      aux->init(7);
    }
    labels = Tensor(ctx, {batch}, nn::DType::U32);
    loss = Tensor(ctx, {1}, nn::DType::F32, MemoryKind::Host);
    aux_loss = Tensor(ctx, {1}, nn::DType::F32, MemoryKind::Host);
    correct = Tensor(ctx, {1}, nn::DType::U32, MemoryKind::Host);
    aux_correct = Tensor(ctx, {1}, nn::DType::U32, MemoryKind::Host);
    std::vector<float> x = test::random_vector(size_t(net->input().numel()), 11, -2.f, 2.f);
    net->input().upload(x);
    std::vector<uint32_t> y(static_cast<size_t>(batch));
    for (int i = 0; i < batch; ++i) y[size_t(i)] = uint32_t(3 + 4 * i) % 10;  // 3, 7, 1, 5, ...
    ctx.upload(labels.view(), y.data(), y.size() * 4);

    grad_step = std::make_unique<Recording>(ctx);
    record(*grad_step, /*grads=*/true);
    loss_step = std::make_unique<Recording>(ctx);
    record(*loss_step, /*grads=*/false);
  }

  // loss = mean CE(LP) + lambda mean CE(aux), the trainer's objective.
  void record(Recording& rec, bool grads) {
    net->forward(rec, /*train=*/true);
    if (aux) aux->forward(rec, /*train=*/true);
    nn::cross_entropy(rec, net->logits(), labels, loss, correct, grads ? &net->d_logits() : nullptr);
    if (aux) {
      nn::cross_entropy(rec, aux->logits(), labels, aux_loss, aux_correct, grads ? &aux->d_logits() : nullptr,
                        kAuxWeight);
      if (grads) aux->backward(rec);
    }
    if (grads) net->backward(rec);
    rec.finish();
  }

  int evaluations = 0;  // of the loss (the cost of a check)
  double objective() {
    ++evaluations;
    loss_step->run();
    double l = *static_cast<const float*>(loss.view().mapped);
    if (aux) l += kAuxWeight * *static_cast<const float*>(aux_loss.view().mapped);
    return l;
  }

  std::vector<nn::Parameter*> parameters() const {
    std::vector<nn::Parameter*> p = net->parameters();
    if (aux) p.insert(p.end(), aux->parameters().begin(), aux->parameters().end());
    return p;
  }
};

// A description run by GraphNetwork, its images and classes as the description says.
inline std::unique_ptr<nn::Network> graph_net(const nn::ModelDescription& d, int batch = GradCheckNet::kBatch) {
  nn::ModelConfig mc;
  mc.model_file = d.source;
  mc.in_channels = d.in_channels, mc.height = d.height, mc.width_px = d.width, mc.classes = d.classes;
  return std::make_unique<nn::GraphNetwork>(test::ctx(), d, mc, batch);
}

struct Mismatch {
  std::string param;
  size_t index;
  double analytic, numeric;
};

// The float32 loss's rounding noise: how far the loss computed at parameters moved by a few
// ulps strays from a smooth function of them. Half the second difference
// |L(v + h) + L(v - h) - 2 L(v)| / 2 at h = 1e-6 (relative for LSQ's steps; first order cancels; the curvature term
// L'' h^2 / 2 is below 1e-8 for |L''| < 1e4), the largest over `samples` random elements of
// random tensors. Deep tiny nets round far above one ulp of the loss: a BN whose channel
// has a small spread amplifies its input's rounding by gamma / std.
inline double loss_noise_floor(GradCheckNet& g, int samples = 12) {
  std::mt19937 rng(17);
  const std::vector<nn::Parameter*> params = g.parameters();
  const double base = g.objective();
  double noise = 0;
  for (int k = 0; k < samples; ++k) {
    nn::Parameter* p = params[std::uniform_int_distribution<size_t>(0, params.size() - 1)(rng)];
    std::vector<float> value = p->value.download();
    const size_t i = std::uniform_int_distribution<size_t>(0, value.size() - 1)(rng);
    const float v = value[i];
    const double h = 1e-6 * (g.relative_step.count(p->name) ? std::fabs(double(v)) : std::max(1.0, std::fabs(double(v))));
    value[i] = float(v + h);
    p->value.upload(value);
    const double up = g.objective();
    value[i] = float(v - h);
    p->value.upload(value);
    const double down = g.objective();
    value[i] = v;
    p->value.upload(value);
    noise = std::max(noise, std::fabs(up + down - 2 * base) / 2);
  }
  return noise;
}

// Finite differences at elements of every parameter tensor: the one with the largest
// analytic gradient, and (elements_per_tensor = 2) a random one. A tiny net has ReLU kinks
// close to its parameters: for layer1.0.conv1.weight's largest element at width 2, the right
// difference is 4.4656 at a step of 1e-4 and the backward 4.4796, while the left one is 3.49
// (a kink less than 1e-4 to the left). So each element is tried with three steps, central
// and one-sided, and agrees when one of them is within tolerance; the dropped-shortcut test
// shows that the check still fails on a real error. Returns the elements that disagree every way.
//
// Tolerance of a difference quotient over a step eps: |backward - fd| <= rtol (|backward| +
// the tensor's largest |backward|) + 2 noise / eps, noise = loss_noise_floor(g) (at least
// kMinLossNoise): 2 noise / eps bounds the rounding in a one-sided quotient (two noisy losses;
// the central one's is noise / eps). rtol: differences near a kink are rough at the scale of
// the tensor's gradients (bn1.bias[1] of resnet20 at width 2: 0.116 vs 0.133, with bn1.bias[0]
// at 1.05), while real errors (a dropped path, a mis-weighted aux loss) move gradients by tens
// of percent. The noise term is what lets the parameters a later batch norm cancels pass: a
// linear bottleneck's BN bias feeds a 1x1 conv and a BN that removes any per-channel constant,
// so its true gradient is 0 and the backward gives 1e-6, while its finite differences are
// rounding, 1e-3 in MobileNetV2 at width 0.1.
constexpr double kMinLossNoise = 2.5e-7;  // the old fixed atol 5e-4 at eps 1e-3: about two ulps of a loss near 2

// The recorded gradient of p as the loss's derivative: LSQ's gradient scale divided out, the
// terms the backward detaches by design added (GradCheckNet::grad_scale, ::complete).
inline std::vector<float> compared_gradient(GradCheckNet& g, nn::Parameter& p, const std::vector<float>& value) {
  std::vector<float> grad = p.grad.download();
  if (g.grad_scale.count(p.name))
    for (float& x : grad) x = float(x / g.grad_scale.at(p.name));
  if (g.complete.count(p.name)) g.complete.at(p.name)(grad, value);
  return grad;
}

inline std::vector<Mismatch> check_gradients(GradCheckNet& g, int* checked, int elements_per_tensor = 2) {
  g.grad_step->run();
  const double rtol = 3e-2, noise = std::max(kMinLossNoise, loss_noise_floor(g));
  std::vector<Mismatch> bad;
  std::mt19937 rng(5);
  *checked = 0;
  const double base = g.objective();
  for (nn::Parameter* p : g.parameters()) {
    std::vector<float> value = p->value.download();
    const std::vector<float> grad = compared_gradient(g, *p, value);
    double max_grad = 0;
    for (float x : grad) max_grad = std::max(max_grad, double(std::fabs(x)));
    std::vector<size_t> at = {size_t(std::max_element(grad.begin(), grad.end(),
                                                      [](float a, float b) { return std::fabs(a) < std::fabs(b); }) -
                                     grad.begin())};
    if (value.size() > 1 && elements_per_tensor > 1)
      at.push_back(std::uniform_int_distribution<size_t>(0, value.size() - 1)(rng));
    for (size_t i : at) {
      const float v = value[i];
      double closest = 0, excess = INFINITY;  // excess: |backward - fd| over its tolerance, the least of the candidates
      // LSQ's steps: relative, at most half the step that keeps every value on its side of the
      // clip, and no smaller than 3e-4: d loss / d log s is 0.05 .. 1 in the tiny nets, so the
      // loss's rounding (2e-6) over a relative step of 3e-4 is already 2 .. 25% of it.
      const bool relative = g.relative_step.count(p->name) && v != 0.f;
      static constexpr double kSteps[3] = {1e-3, 1e-4, 3e-5}, kRelativeSteps[3] = {1e-3, 5e-4, 3e-4};
      double steps[3];
      for (int k = 0; k < 3; ++k)
        steps[k] = relative ? std::min(kRelativeSteps[k], 0.5 * g.relative_step.at(p->name)) : kSteps[k];
      const double scale_tol = rtol * (std::fabs(double(grad[i])) + max_grad);
      for (double rel : steps) {
        if (excess <= 0) break;  // agreed at a larger step: the smaller ones cannot change the verdict
        const double eps = relative ? rel * std::fabs(double(v)) : rel;
        const float vu = float(v + eps), vd = float(v - eps);  // the steps as the floats uploaded
        value[i] = vu;
        p->value.upload(value);
        const double up = g.objective();
        value[i] = vd;
        p->value.upload(value);
        const double down = g.objective();
        const double tol = scale_tol + 2 * noise / eps;
        for (double numeric : {(up - down) / (double(vu) - vd), (up - base) / (double(vu) - v), (base - down) / (v - double(vd))})
          if (std::fabs(numeric - grad[i]) - tol < excess) excess = std::fabs(numeric - grad[i]) - tol, closest = numeric;
      }
      value[i] = v;
      p->value.upload(value);
      ++*checked;
      if (excess > 0) bad.push_back({p->name, i, grad[i], closest});
    }
  }
  if (!bad.empty()) MESSAGE("the loss's rounding noise: " << noise);
  return bad;
}

// Directional derivatives, for nets whose loss is too noisy for single elements (deep tiny
// nets, clipped channels): per parameter tensor a random direction v (each element +-1,
// times |value| for a tensor differenced relatively), the backward's g.v against
// differences of the loss along v. One element's difference carries the loss's whole
// rounding noise over one gradient component; along v the signal is the whole tensor's
// (|g o v| = sqrt(sum (g_i v_i)^2), the typical size of g.v), so the same noise weighs up
// to sqrt(n) times less. As check_gradients: three steps, central and one-sided, the
// closest candidate; tolerance rtol (|g.v| + |g o v|) + 2 noise / eps. The analytic side
// uses the steps as the floats uploaded.
struct Directional {
  std::string param;
  double analytic, numeric, tol;  // per unit step along v, the candidate closest to agreeing
  bool ok() const { return std::fabs(analytic - numeric) <= tol; }
};

// The direction per tensor: random signs, or the signs of the recorded gradient (g.v = |g|_1,
// the largest signal a +-1 direction gets: up to sqrt(n) times a random one's).
enum class Direction { Random, GradientSigns };

// only: the tensors to check (empty: all); noise: the loss's (0: measured, loss_noise_floor).
inline std::vector<Directional> directional_derivatives(GradCheckNet& g, const std::set<std::string>& only = {},
                                                        double noise = 0, Direction direction = Direction::Random) {
  const double rtol = 3e-2;
  g.grad_step->run();
  noise = std::max(kMinLossNoise, noise > 0 ? noise : loss_noise_floor(g));
  const double base = g.objective();
  std::vector<Directional> out;
  for (nn::Parameter* p : g.parameters()) {
    if (!only.empty() && !only.count(p->name)) continue;
    const std::vector<float> value = p->value.download();
    const std::vector<float> grad = compared_gradient(g, *p, value);
    const bool relative = g.relative_step.count(p->name) > 0;
    std::mt19937 rng(uint32_t(std::hash<std::string>{}(p->name)));  // the same direction when checked alone
    std::vector<double> v(value.size());
    double spread = 0;
    for (size_t i = 0; i < v.size(); ++i) {
      v[i] = (rng() & 1u) ? 1.0 : -1.0;
      if (direction == Direction::GradientSigns) v[i] = grad[i] < 0 ? -1.0 : 1.0;
      if (relative) v[i] *= std::fabs(double(value[i]));
      spread += (double(grad[i]) * v[i]) * (double(grad[i]) * v[i]);
    }
    spread = std::sqrt(spread);
    Directional best{p->name, 0, 0, 0};
    double excess = INFINITY;
    static constexpr double kSteps[3] = {3e-5, 1e-5, 3e-6}, kRelativeSteps[3] = {1e-3, 5e-4, 3e-4};
    for (int k = 0; k < 3 && excess > 0; ++k) {
      const double eps = relative ? std::min(kRelativeSteps[k], 0.5 * g.relative_step.at(p->name)) : kSteps[k];
      std::vector<float> up_value(value), down_value(value);
      double a_up = 0, a_down = 0;  // g . (the displacement), each side
      for (size_t i = 0; i < v.size(); ++i) {
        up_value[i] = float(value[i] + eps * v[i]);
        down_value[i] = float(value[i] - eps * v[i]);
        a_up += double(grad[i]) * (double(up_value[i]) - value[i]);
        a_down += double(grad[i]) * (value[i] - double(down_value[i]));
      }
      p->value.upload(up_value);
      const double up = g.objective();
      p->value.upload(down_value);
      const double down = g.objective();
      const double tol = rtol * (std::fabs(a_up + a_down) / (2 * eps) + spread) + 2 * noise / eps;
      const std::pair<double, double> candidates[3] = {
          {(a_up + a_down) / (2 * eps), (up - down) / (2 * eps)}, {a_up / eps, (up - base) / eps}, {a_down / eps, (base - down) / eps}};
      for (const auto& [analytic, numeric] : candidates)
        if (std::fabs(numeric - analytic) - tol < excess) excess = std::fabs(numeric - analytic) - tol, best = {p->name, analytic, numeric, tol};
    }
    p->value.upload(value);
    out.push_back(best);
  }
  return out;
}

// The test of the checker: `param`'s recorded gradient scaled by `factor` (after the
// completions above) fails the directional check of that tensor.
inline bool directional_catches(GradCheckNet& g, const std::string& param, double factor, double noise = 0,
                                Direction direction = Direction::Random) {
  const auto before = g.complete.count(param) ? g.complete.at(param) : nullptr;
  g.complete[param] = [before, factor](std::vector<float>& a, const std::vector<float>& v) {
    if (before) before(a, v);
    for (float& x : a) x = float(x * factor);
  };
  const std::vector<Directional> d = directional_derivatives(g, {param}, noise, direction);
  if (before)
    g.complete[param] = before;
  else
    g.complete.erase(param);
  REQUIRE_MESSAGE(d.size() == 1, param);
  MESSAGE(param << " x " << factor << ": g.v " << d[0].analytic << ", finite differences " << d[0].numeric << ", tolerance " << d[0].tol);
  return !d[0].ok();
}

// Quantized networks. The quantizers run at kCheckBits: their rounding (2^-24 of the clip
// range) is far below the loss's float noise over the finite-difference steps, so the
// straight-through backward is the derivative of the loss, while clipping stays real: PACT /
// CG-PACT's alpha, LSQ's step sizes and SAT's rescale of the FC are differentiable parameters
// of the loss (at 4 bits the loss is a staircase in every weight and no finite difference
// means anything). calibrate_quantizers moves the clip levels into gaps of the data so that
// their gradients are not zero. LSQ's step-size gradient carries the detached scale
// gs = 1 / sqrt(N Qp) by design (METHODS.md): the check divides it out (grad_scale) and
// compares the rest, the STE formula, with the loss's derivative: inside the range
// round(v/s) - v/s averages to zero over a difference step (it is the rounding the loss does
// not see at 24 bits), outside it is -Qn or Qp, the true derivative of the clipped values.
// A signed site (a linear bottleneck's LAYER.act) gets the policy's signed form; signed PACT
// takes 2..8 bits only, so nets with such sites are checked quantized with LSQ or not at all.
constexpr int kCheckBits = quant::kMaxKernelBits;

struct QuantCheck {
  std::string wquant, aquant;  // registry names; empty: full precision
  bool sat = false;            // SAT's rescale on the last FC (without a weight quantizer there)
  std::string str() const { return (wquant.empty() ? "fp" : wquant) + "/" + (aquant.empty() ? "fp" : aquant) + (sat ? "+sat" : ""); }
};

class HighBitsPolicy : public nn::QuantPolicy {
 public:
  explicit HighBitsPolicy(const QuantCheck& q) : q_(q) {
    quant::QuantConfig sat;
    sat.sat = true;
    sat_ = quant::make_quant_policy(sat);
  }
  std::unique_ptr<nn::WeightQuantizer> weight(Context& ctx, const std::string& layer, const Tensor& w,
                                              nn::LayerRole role) override {
    if (role == nn::LayerRole::Last && q_.sat) return sat_->weight(ctx, layer, w, role);
    if (q_.wquant.empty()) return nullptr;
    return quant::weight_quantizer(q_.wquant).make(ctx, layer, w, kCheckBits, false);
  }
  std::unique_ptr<nn::ActQuantizer> activation(Context& ctx, const std::string& name, const std::vector<int>& shape,
                                               nn::LayerRole consumer) override {
    if (q_.aquant.empty()) return nullptr;
    return quant::act_quantizer(q_.aquant).make(ctx, name, shape, kCheckBits, consumer);
  }
  // Linear bottlenecks (MobileNetV2's block outputs): the signed form, as the run's policy.
  std::unique_ptr<nn::ActQuantizer> signed_activation(Context& ctx, const std::string& name,
                                                      const std::vector<int>& shape) override {
    if (q_.aquant.empty()) return nullptr;
    return quant::act_quantizer(q_.aquant).make_signed(ctx, name, shape, kCheckBits);
  }

 private:
  QuantCheck q_;
  std::unique_ptr<nn::QuantPolicy> sat_;
};

// Quantizes `net` (initialised, before the aux module: a GradCheckNet tweak).
inline void quantize_for_check(nn::Network& net, const QuantCheck& q) {
  HighBitsPolicy policy(q);
  net.apply_quant_policy(policy);
}

// A clip level in the middle of the widest gap between neighbouring values of x (>= 0) near
// its 90th percentile: a value at the clip level would be a kink that every step of every
// parameter upstream crosses, and a learned clip level (LSQ's step) can be differenced by
// up to half the gap without any value crossing it. At least 3 values above it (the FC's
// input has only batch x features values): a single clipped value may have no gradient
// (clipped again downstream), which leaves only LSQ's by-design rounding term in its step's
// gradient.
struct ClipInGap {
  float clip, half_gap;
};
inline ClipInGap clip_in_gap(std::vector<float> x, double quantile = 0.88) {
  REQUIRE(x.size() >= 5);
  std::sort(x.begin(), x.end());
  if (quantile >= 1) return {2 * std::max(x.back(), 1e-3f), std::max(x.back(), 1e-3f)};  // clips nothing
  const size_t percent = size_t(std::lround(quantile * 100));
  const size_t top = std::min(x.size() * (percent + 6) / 100, x.size() - 4);
  size_t at = std::min(x.size() * percent / 100, top);
  for (size_t k = at; k <= top; ++k)
    if (x[k + 1] - x[k] > x[at + 1] - x[at]) at = k;
  return {0.5f * (x[at] + x[at + 1]), 0.5f * (x[at + 1] - x[at])};
}

// After GradCheckNet's construction: moves the clip levels into the data, so that their
// gradients are not zero, and tells the checker what the quantizers' backward leaves out by
// design. Activations clip near the 90th percentile of their input (one site after the other,
// each seeing the clipped ones before it): a few percent of the values; clipping more makes
// whole channels of the tiny nets constant, which the next BN blows up by 1 / std. LSQ's
// weight steps clip |w| the same way (the BN after the conv cancels a common scale, so the
// loss feels the step only through the clipped weights).
// relative_clip_steps: PACT / CG-PACT's alpha differenced as LSQ's steps (relative, within
// half the gap around it): a clip level's derivative needs steps far above the weights'
// (3e-5 .. 3e-6 put the loss's rounding noise over it).
inline void calibrate_quantizers(GradCheckNet& g, const QuantCheck& q, double quantile = 0.88,
                                 bool relative_clip_steps = false) {
  const quant::LsqConfig wgt_cfg{kCheckBits, quant::QuantTarget::Weight, false};
  const nn::QuantSites sites = g.net->quant_sites();
  for (const nn::ActSite& s : sites.acts) {
    if (!s.quant) continue;
    REQUIRE_MESSAGE(s.input->defined(), s.name);
    // A signed site (a linear bottleneck's "LAYER.act") clips |x| at the level.
    const bool is_signed = s.quant->describe().find(" signed ") != std::string::npos;
    const quant::LsqConfig act_cfg{kCheckBits, quant::QuantTarget::Activation, false, is_signed};
    g.loss_step->run();
    std::vector<float> x = s.input->download();
    if (is_signed)
      for (float& v : x) v = std::fabs(v);
    const ClipInGap c = clip_in_gap(std::move(x), quantile);
    for (nn::Parameter* p : s.quant->parameters()) {
      if (q.aquant == "lsq") {
        p->value.upload(std::vector<float>(size_t(p->value.numel()), c.clip / quant::lsq_range(act_cfg).qp));
        g.grad_scale[p->name] = quant::lsq_grad_scale(act_cfg, s.input->shape());
        g.relative_step[p->name] = c.half_gap / c.clip;
      } else {
        p->value.upload(std::vector<float>(size_t(p->value.numel()), c.clip));
        if (relative_clip_steps) g.relative_step[p->name] = c.half_gap / c.clip;
      }
    }
  }
  for (const nn::WeightSite& w : sites.weights) {
    if (!w.quant) continue;
    const std::string name = w.name + ".weight";
    if (w.quant->kind().sat) {
      // SAT (no inner quantizer): W* = W f, f = 1 / sqrt(n Var[W]), and the backward a = f dW*
      // treats f as a constant; the loss also moves f: + f^2 (n / N) (W_i - mean) sum_j a_j W_j.
      const double n = w.weight->dim(0);
      g.complete[name] = [n](std::vector<float>& a, const std::vector<float>& wv) {
        double mean = 0, var = 0, aw = 0;
        for (float x : wv) mean += x;
        mean /= double(wv.size());
        for (float x : wv) var += (x - mean) * (x - mean);
        var /= double(wv.size());
        for (size_t j = 0; j < wv.size(); ++j) aw += double(a[j]) * wv[j];
        const double f2 = 1 / (n * var);
        for (size_t i = 0; i < wv.size(); ++i) a[i] = float(a[i] - f2 * n / double(wv.size()) * (wv[i] - mean) * aw);
      };
    } else if (q.wquant == "dorefa") {
      // DoReFa: wq = t / m (at kCheckBits), t = tanh(w), m = max|t| = tanh(|w_k|), and the
      // backward a_j = dwq_j (1 - t_j^2) / m treats m as a constant; the loss also moves m
      // through w_k: - (1 - m^2) sign(w_k) / m sum_j a_j t_j / (1 - t_j^2).
      g.complete[name] = [](std::vector<float>& a, const std::vector<float>& wv) {
        size_t k = 0;
        for (size_t j = 0; j < wv.size(); ++j)
          if (std::fabs(wv[j]) > std::fabs(wv[k])) k = j;
        const double m = std::tanh(std::fabs(double(wv[k])));
        double sum = 0;
        for (size_t j = 0; j < wv.size(); ++j) {
          const double t = std::tanh(double(wv[j]));
          sum += a[j] * t / (1 - t * t);
        }
        a[k] = float(a[k] - (1 - m * m) * (wv[k] < 0 ? -1 : 1) / m * sum);
      };
    } else if (q.wquant == "lsq") {
      std::vector<float> v = w.weight->download();
      for (float& x : v) x = std::fabs(x);
      const ClipInGap c = clip_in_gap(std::move(v));
      for (nn::Parameter* p : w.quant->parameters()) {
        p->value.upload(std::vector<float>(size_t(p->value.numel()), c.clip / quant::lsq_range(wgt_cfg).qp));
        g.grad_scale[p->name] = quant::lsq_grad_scale(wgt_cfg, w.weight->shape());
        g.relative_step[p->name] = c.half_gap / c.clip;
      }
    }
  }
}

inline void report(const std::vector<Mismatch>& bad) {
  for (const Mismatch& m : bad)
    MESSAGE(m.param << "[" << m.index << "]: backward " << m.analytic << ", finite differences " << m.numeric);
}

// The whole check: no element disagrees, and two elements of every parameter tensor (one of
// a one-element tensor) were checked.
inline void expect_gradients_match(GradCheckNet& g) {
  int checked = 0, expected = 0;
  const auto bad = check_gradients(g, &checked);
  report(bad);
  CHECK(bad.empty());
  for (nn::Parameter* p : g.parameters()) expected += p->value.numel() > 1 ? 2 : 1;
  CHECK(checked == expected);
}
}  // namespace gradcheck

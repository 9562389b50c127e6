#pragma once
// The finite-difference machinery of the network gradient checks (test_net_gradcheck.cpp,
// test_graph_network.cpp): a tiny network (+ aux head) and check_gradients.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <memory>
#include <random>

#include "backend/recording.h"
#include "nn/model/graph_network.h"
#include "nn/model/network.h"
#include "nn/ops/cross_entropy.h"
#include "quant/policy.h"
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

  static constexpr int kBatch = 3;
  // The built-in model at width 2, 8x8x1 images, 10 classes, batch 3.
  static nn::ModelConfig tiny(const std::string& model) {
    nn::ModelConfig mc;
    mc.name = model;
    mc.width = 2;
    mc.in_channels = 1, mc.height = 8, mc.width_px = 8, mc.classes = 10;
    return mc;
  }
  GradCheckNet(const std::string& model, bool with_aux, const std::function<void(nn::Network&)>& tweak = {})
      : GradCheckNet(nn::build_network(test::ctx(), tiny(model), kBatch), with_aux, tweak) {}
  // Any network of batch kBatch and 10 classes.
  GradCheckNet(std::unique_ptr<nn::Network> built, bool with_aux, const std::function<void(nn::Network&)>& tweak = {})
      : ctx(test::ctx()), net(std::move(built)) {
    const int batch = kBatch;
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
    std::vector<uint32_t> y = {3, 7, 1};
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

  double objective() {
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

// Finite differences at two elements of every parameter tensor: the one with the largest
// analytic gradient and a random one. A tiny net has ReLU kinks close to its parameters:
// for layer1.0.conv1.weight's largest element at width 2, the right difference is 4.4656 at
// a step of 1e-4 and the backward 4.4796, while the left one is 3.49 (a kink less than 1e-4
// to the left). So each element is tried with three steps, central and one-sided, and agrees
// when one of them is within tolerance; the dropped-shortcut test shows that the check still
// fails on a real error. Returns the elements that disagree every way.
inline std::vector<Mismatch> check_gradients(GradCheckNet& g, int* checked) {
  g.grad_step->run();
  // Relative to the element and to the tensor's largest gradient: differences near a kink
  // are rough at the scale of the tensor's gradients (bn1.bias[1] at width 2: 0.116 vs
  // 0.133, with bn1.bias[0] at 1.05), while real errors (a dropped path, a mis-weighted aux
  // loss) move gradients by tens of percent.
  const double rtol = 3e-2, atol = 5e-4;  // atol: float32 loss noise over a step of 1e-3
  std::vector<Mismatch> bad;
  std::mt19937 rng(5);
  *checked = 0;
  const double base = g.objective();
  for (nn::Parameter* p : g.parameters()) {
    const std::vector<float> grad = p->grad.download();
    std::vector<float> value = p->value.download();
    double max_grad = 0;
    for (float x : grad) max_grad = std::max(max_grad, double(std::fabs(x)));
    std::vector<size_t> at = {size_t(std::max_element(grad.begin(), grad.end(),
                                                      [](float a, float b) { return std::fabs(a) < std::fabs(b); }) -
                                     grad.begin())};
    if (value.size() > 1) at.push_back(std::uniform_int_distribution<size_t>(0, value.size() - 1)(rng));
    for (size_t i : at) {
      const float v = value[i];
      double closest = 0, best = INFINITY;
      for (double eps : {1e-3, 1e-4, 3e-5}) {
        value[i] = v + float(eps);
        p->value.upload(value);
        const double up = g.objective();
        value[i] = v - float(eps);
        p->value.upload(value);
        const double down = g.objective();
        for (double numeric : {(up - down) / (2 * eps), (up - base) / eps, (base - down) / eps})
          if (std::fabs(numeric - grad[i]) < best) best = std::fabs(numeric - grad[i]), closest = numeric;
      }
      value[i] = v;
      p->value.upload(value);
      ++*checked;
      if (best > atol + rtol * (std::fabs(double(grad[i])) + max_grad)) bad.push_back({p->name, i, grad[i], closest});
    }
  }
  return bad;
}

inline void report(const std::vector<Mismatch>& bad) {
  for (const Mismatch& m : bad)
    MESSAGE(m.param << "[" << m.index << "]: backward " << m.analytic << ", finite differences " << m.numeric);
}
}  // namespace gradcheck

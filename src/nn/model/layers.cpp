#include "nn/model/layers.h"

#include <cmath>

#include "backend/error.h"
#include "nn/ops/batchnorm2d.h"
#include "nn/ops/linear.h"

namespace vkqat::nn {

Parameter::Parameter(Context& ctx, std::string n, std::vector<int> shape, bool decay)
    : name(std::move(n)), value(ctx, shape), grad(ctx, shape), momentum(ctx, shape), weight_decay(decay) {
  value.zero();  // memory is recycled: never start from another tensor's leftovers
  grad.zero();
  momentum.zero();
}

float InitRng::uniform(float lo, float hi) {
  // 53 random bits -> [0, 1): identical on every standard library.
  double u = double(rng_() >> 11) * (1.0 / 9007199254740992.0);
  return float(lo + (hi - lo) * u);
}

float InitRng::normal(float mean, float stddev) {
  double u1 = double((rng_() >> 11) + 1) * (1.0 / 9007199254740993.0);  // (0, 1]
  double u2 = double(rng_() >> 11) * (1.0 / 9007199254740992.0);
  return float(mean + stddev * std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
}

static std::vector<float> filled(size_t n, float v) { return std::vector<float>(n, v); }

Conv2dLayer::Conv2dLayer(Context& ctx, const std::string& layer_name, const Conv2dShape& s)
    : name(layer_name), shape(s), weight(ctx, layer_name + ".weight", s.w_shape(), true) {
  shape.validate();
}

void Conv2dLayer::init(InitRng& rng) {
  // torchvision: kaiming_normal_(mode="fan_out", nonlinearity="relu")
  double fan_out = double(shape.c_out) * shape.kh * shape.kw / (shape.depthwise() ? shape.c_out : 1);
  float stddev = float(std::sqrt(2.0 / fan_out));
  std::vector<float> w(size_t(weight.value.numel()));
  for (auto& v : w) v = rng.normal(0.f, stddev);
  weight.value.upload(w);
  weight.momentum.zero();
}

void Conv2dLayer::set_quantizer(Context& ctx, std::unique_ptr<WeightQuantizer> q) {
  quant = std::move(q);
  if (quant && !wq.defined()) {
    wq = Tensor(ctx, weight.value.shape());
    d_wq = Tensor(ctx, weight.value.shape());
  }
}

void Conv2dLayer::set_input_grid(Context& ctx, std::optional<Grid> g, const Tensor* scratch) {
  input_grid = g;
  if (!g) return;
  if (!scratch) throw Error("Conv2dLayer " + name + ": an input grid needs a scratch tensor");
  x_levels = Tensor::alias(*scratch, shape.x_shape());
  if (!w_levels.defined()) w_levels = Tensor(ctx, weight.value.shape());
}

void Conv2dLayer::forward(Recording& rec, const Tensor& x, Tensor& y, bool train) {
  if (quant) quant->forward(rec, weight.value, wq, train);  // once per step, read by the conv
  if (train || !exact_eval()) return conv2d_forward(rec, shape, x, effective_weight(), y);
  const Grid w_grid = *quant->grid();
  grid_levels(rec, x, *input_grid, x_levels);
  grid_levels(rec, wq, w_grid, w_levels);
  conv2d_forward(rec, shape, x_levels, w_levels, y);  // integers: every partial sum exact
  grid_rescale(rec, y, *input_grid, w_grid);
}

void Conv2dLayer::backward(Recording& rec, const Tensor& x, const Tensor& dy, Tensor* dx, bool accumulate_dx) {
  conv2d_backward_weight(rec, shape, x, dy, quant ? d_wq : weight.grad, false);
  if (quant) quant->backward(rec, weight.value, d_wq, weight.grad);
  if (dx) conv2d_backward_data(rec, shape, dy, effective_weight(), *dx, accumulate_dx);
}

BatchNorm2dLayer::BatchNorm2dLayer(Context& ctx, const std::string& n, int batch, int channels)
    : name(n),
      gamma(ctx, n + ".weight", {channels}, false),
      beta(ctx, n + ".bias", {channels}, false),
      running_mean(ctx, {channels}),
      running_var(ctx, {channels}),
      saved_mean(ctx, {channels}),
      saved_invstd(ctx, {channels}) {}

void BatchNorm2dLayer::init() {
  size_t c = size_t(gamma.value.numel());
  gamma.value.upload(filled(c, 1.f));
  beta.value.upload(filled(c, 0.f));
  running_mean.upload(filled(c, 0.f));
  running_var.upload(filled(c, 1.f));
  gamma.momentum.zero();
  beta.momentum.zero();
}

void BatchNorm2dLayer::forward(Recording& rec, const Tensor& x, Tensor& y, bool train, bool relu,
                               const BnQuantEpilogue* quant, const Tensor* residual) {
  if (train)
    batchnorm2d_forward_train(rec, x, gamma.value, beta.value, running_mean, running_var, saved_mean, saved_invstd, y,
                              eps, momentum, relu, quant, residual, sync);
  else if (quant || residual)
    throw Error("BatchNorm2dLayer " + name + ": the quantizer and residual epilogues are for training only");
  else
    batchnorm2d_forward_eval(rec, x, gamma.value, beta.value, running_mean, running_var, y, eps, relu);
}

void BatchNorm2dLayer::backward(Recording& rec, const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx,
                                bool relu, bool accumulate_dx, Tensor* grad_out) {
  batchnorm2d_backward(rec, x, y, dy, gamma.value, saved_mean, saved_invstd, dx, accumulate_dx, gamma.grad, beta.grad,
                       false, relu, nullptr, grad_out, sync);
}

void BatchNorm2dLayer::forward_quantized(Recording& rec, const Tensor& x, ActQuantizer& act, Tensor& pre, Tensor& y,
                                         bool train) {
  if (train) {
    if (auto clip = act.uniform_clip()) {
      BnQuantEpilogue q{clip->clip, clip->levels, clip->inv_levels, &y};
      forward(rec, x, pre, train, false, &q);
      return;
    }
  }
  forward(rec, x, pre, train, false);
  act.forward(rec, pre, y, train);
}

void BatchNorm2dLayer::backward_quantized(Recording& rec, const Tensor& x, ActQuantizer& act, const Tensor& pre,
                                          const Tensor& dy, Tensor& d_pre, bool accumulate_pre, Tensor& dx,
                                          bool accumulate_dx, bool write_d_pre) {
  if (auto clip = act.uniform_clip()) {
    if (!clip_grad_partials.defined()) clip_grad_partials = Tensor(rec.context(), {int(gamma.value.numel())});
    BnQuantBackward q{clip->clip, clip->levels, clip->inv_levels, clip->calibrated,
                      accumulate_pre ? &d_pre : nullptr, &clip_grad_partials};
    batchnorm2d_backward(rec, x, pre, dy, gamma.value, saved_mean, saved_invstd, dx, accumulate_dx, gamma.grad,
                         beta.grad, false, false, &q, write_d_pre ? &d_pre : nullptr, sync);
    act.merge_clip_grad(rec, clip_grad_partials);
    return;
  }
  act.backward(rec, pre, dy, d_pre, accumulate_pre);
  backward(rec, x, pre, d_pre, dx, false, accumulate_dx);
}

LinearLayer::LinearLayer(Context& ctx, const std::string& name, int in_features, int out_features)
    : in(in_features),
      out(out_features),
      weight(ctx, name + ".weight", {out_features, in_features}, true),
      bias(ctx, name + ".bias", {out_features}, false) {}

void LinearLayer::init(InitRng& rng) {
  float bound = 1.f / std::sqrt(float(in));
  std::vector<float> w(size_t(in) * size_t(out)), b(static_cast<size_t>(out));
  for (auto& v : w) v = rng.uniform(-bound, bound);
  for (auto& v : b) v = rng.uniform(-bound, bound);
  weight.value.upload(w);
  bias.value.upload(b);
  weight.momentum.zero();
  bias.momentum.zero();
}

void LinearLayer::set_quantizer(Context& ctx, std::unique_ptr<WeightQuantizer> q) {
  quant = std::move(q);
  if (quant && !wq.defined()) {
    wq = Tensor(ctx, weight.value.shape());
    d_wq = Tensor(ctx, weight.value.shape());
  }
}

void LinearLayer::forward(Recording& rec, const Tensor& x, Tensor& y, bool train) {
  if (quant) quant->forward(rec, weight.value, wq, train);
  linear_forward(rec, x, effective_weight(), bias.value, y);
}

void LinearLayer::backward(Recording& rec, const Tensor& x, const Tensor& dy, Tensor* dx, bool accumulate_dx) {
  linear_backward(rec, x, effective_weight(), dy, dx, accumulate_dx, quant ? d_wq : weight.grad, bias.grad, false);
  if (quant) quant->backward(rec, weight.value, d_wq, weight.grad);
}

}  // namespace vkqat::nn

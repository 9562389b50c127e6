#include "quant/aux_module.h"

#include "backend/error.h"
#include "nn/ops/add.h"
#include "nn/ops/pool.h"

namespace vkqat::quant {
using nn::ConvBnUnit;
using nn::Tensor;

static nn::Conv2dShape conv1x1(const std::vector<int>& in, int c_out, int stride) {
  nn::Conv2dShape s;
  s.n = in[0], s.c_in = in[1], s.h = in[2], s.w = in[3], s.c_out = c_out, s.kh = s.kw = 1, s.stride = stride;
  return s;
}

AuxModule::AuxModule(Context& ctx, nn::Network& net) : ctx_(ctx) {
  if (!net.has_residual_blocks())
    throw Error("--aux: model " + net.config().name + " has no residual blocks to attach the auxiliary module to");
  taps_ = net.feature_taps();
  if (taps_.size() < 2) throw Error("--aux: model " + net.config().name + " exposes no residual taps");
  std::vector<int> b_shape;
  for (size_t i = 0; i < taps_.size(); ++i) {
    const std::vector<int>& t = taps_[i].value->shape();
    Stage st;
    const std::string p = "aux." + std::to_string(i);
    st.adaptor = std::make_unique<ConvBnUnit>(ctx, p + ".adaptor.0", p + ".adaptor.1", conv1x1(t, t[1], 1), false);
    add_unit(*st.adaptor);
    if (i > 0 && (b_shape[1] != t[1] || b_shape[2] != t[2] || b_shape[3] != t[3])) {
      // The 1x1 stride-s conv gives ceil(side / s): 7x7 -> 4x4 is stride 2 (torchvision ResNets
      // on 28x28 images), so the floor quotient's next stride is tried too.
      int stride = b_shape[2] / t[2];
      if (stride >= 1 && (b_shape[2] + stride - 1) / stride != t[2]) ++stride;
      if (stride < 1 || (b_shape[2] + stride - 1) / stride != t[2] || (b_shape[3] + stride - 1) / stride != t[3])
        throw Error("--aux: cannot match feature map " + nn::shape_str(b_shape) + " to " + nn::shape_str(t));
      st.down = std::make_unique<ConvBnUnit>(ctx, p + ".downsample.0", p + ".downsample.1", conv1x1(b_shape, t[1], stride),
                                             false);
      add_unit(*st.down);
    }
    if (i > 0) st.out_buf = Tensor(ctx, t);
    if (st.down) st.d_sum_buf = Tensor(ctx, t);
    st.d_out = Tensor(ctx, t);
    b_shape = t;
    stages_.push_back(std::move(st));
  }
  // Aliases, once the stages no longer move.
  for (size_t i = 0; i < stages_.size(); ++i) {
    Stage& st = stages_[i];
    st.out = i == 0 ? &st.adaptor->out : &st.out_buf;
    st.d_sum = i == 0 ? nullptr : st.down ? &st.d_sum_buf : &stages_[i - 1].d_out;
  }
  const int n = b_shape[0], c = b_shape[1], classes = net.config().classes;
  pooled_ = Tensor(ctx, {n, c});
  d_pooled_ = Tensor(ctx, {n, c});
  logits_ = Tensor(ctx, {n, classes});
  d_logits_ = Tensor(ctx, {n, classes});
  fc_ = nn::LinearLayer(ctx, "aux.fc", c, classes);
  for (nn::Parameter* p : {&fc_.weight, &fc_.bias}) params_.push_back(p), state_.push_back({p->name, &p->value});
}

void AuxModule::add_unit(ConvBnUnit& u) {
  params_.push_back(&u.conv.weight);
  state_.push_back({u.conv.weight.name, &u.conv.weight.value});
  for (nn::Parameter* p : {&u.bn.gamma, &u.bn.beta}) params_.push_back(p), state_.push_back({p->name, &p->value});
  state_.push_back({u.bn.name + ".running_mean", &u.bn.running_mean});
  state_.push_back({u.bn.name + ".running_var", &u.bn.running_var});
  bn_names_.push_back(u.bn.name);
  bn_layers_.push_back(&u.bn);
}

void AuxModule::init(uint64_t seed) {
  nn::InitRng rng(seed ^ 0x9e3779b97f4a7c15ull);
  for (Stage& s : stages_)
    for (ConvBnUnit* u : {s.adaptor.get(), s.down.get()})
      if (u) u->conv.init(rng), u->bn.init();
  fc_.init(rng);
}

void AuxModule::forward(Recording& rec, bool train) {
  for (size_t i = 0; i < stages_.size(); ++i) {
    Stage& s = stages_[i];
    if (i == 0) {  // b = the adaptor's output
      s.adaptor->forward(rec, *taps_[i].value, train);
      continue;
    }
    const Stage& prev = stages_[i - 1];
    if (s.down) s.down->forward(rec, *prev.out, train);
    const Tensor& shortcut = s.down ? s.down->out : *prev.out;
    nn::ConvBnUnit& a = *s.adaptor;
    if (train) {  // relu(bn(conv(tap)) + shortcut) in BN's pass; the backward never reads a.out
      a.conv.forward(rec, *taps_[i].value, a.conv_out, train);
      a.bn.forward(rec, a.conv_out, *s.out, train, /*relu=*/true, nullptr, &shortcut);
    } else {
      a.forward(rec, *taps_[i].value, train);
      nn::add_forward(rec, shortcut, a.out, *s.out, /*relu=*/true);
    }
  }
  nn::global_avg_pool_forward(rec, *stages_.back().out, pooled_);
  fc_.forward(rec, pooled_, logits_, train);
}

void AuxModule::backward(Recording& rec) {
  fc_.backward(rec, pooled_, d_logits_, &d_pooled_, false);
  nn::global_avg_pool_backward(rec, d_pooled_, stages_.back().d_out, false);
  for (size_t i = stages_.size(); i-- > 0;) {
    Stage& s = stages_[i];
    if (i == 0) {
      s.adaptor->backward(rec, *taps_[0].value, s.d_out, taps_[0].grad, false);
      break;
    }
    Stage& prev = stages_[i - 1];
    // The ReLU after the sum in the adaptor BN's backward pass, which also writes the sum's
    // gradient d_sum for the shortcut. Without `down`, d_sum is prev.d_out: the identity
    // path's gradient lands in place.
    nn::ConvBnUnit& a = *s.adaptor;
    a.bn.backward(rec, a.conv_out, *s.out, s.d_out, a.d_conv_out, /*relu=*/true, false, s.d_sum);
    a.conv.backward(rec, *taps_[i].value, a.d_conv_out, taps_[i].grad, false);  // into the LP network
    if (s.down) s.down->backward(rec, *prev.out, *s.d_sum, &prev.d_out, false);
  }
}

}  // namespace vkqat::quant

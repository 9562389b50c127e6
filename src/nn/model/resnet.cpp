#include "nn/model/resnet.h"

#include <algorithm>

#include "nn/ops/add.h"
#include "nn/ops/pool.h"
#include "nn/ops/relu.h"

namespace vkqat::nn {

static Conv2dShape conv_shape(int n, int c_in, int h, int w, int c_out, int k, int stride, int pad) {
  Conv2dShape s;
  s.n = n, s.c_in = c_in, s.h = h, s.w = w, s.c_out = c_out, s.kh = s.kw = k, s.stride = stride, s.pad = pad;
  return s;
}

static void copy_tensor(Recording& rec, const Tensor& src, Tensor& dst) { rec.copy(src.view(), dst.view(), "copy"); }

// ---- ConvBnUnit ----------------------------------------------------------------------
ConvBnUnit::ConvBnUnit(Context& ctx, const std::string& conv_name, const std::string& bn_name, const Conv2dShape& s,
                       bool relu_after)
    : conv(ctx, conv_name, s),
      bn(ctx, bn_name, s.n, s.c_out),
      relu(relu_after),
      conv_out(ctx, s.y_shape()),
      out(ctx, s.y_shape()),
      d_conv_out(ctx, s.y_shape()),
      d_out(ctx, s.y_shape()) {}

void ConvBnUnit::split_activation(Context& ctx) {
  if (!pre.defined()) pre = Tensor(ctx, out.shape());
  // A uniform-clip quantizer's backward runs inside BN's and needs no gradient of pre,
  // unless another consumer (the aux module's tap) writes one.
  const bool fused_backward = act && act->uniform_clip() && !d_pre_prefilled;
  if (!d_pre.defined() && !fused_backward) d_pre = Tensor(ctx, out.shape());
}

void ConvBnUnit::forward(Recording& rec, const Tensor& x, bool train) {
  conv.forward(rec, x, conv_out, train);
  if (!pre.defined())
    bn.forward(rec, conv_out, out, train, relu);  // ReLU fused into BN
  else if (act)
    bn.forward_quantized(rec, conv_out, *act, pre, out, train);
  else {
    bn.forward(rec, conv_out, pre, train, false);
    if (relu)
      relu_forward(rec, pre, out);
    else
      copy_tensor(rec, pre, out);
  }
}

void ConvBnUnit::backward(Recording& rec, const Tensor& x, const Tensor& dy, Tensor* dx, bool accumulate_dx) {
  if (!pre.defined()) {
    bn.backward(rec, conv_out, out, dy, d_conv_out, relu, false);
  } else if (act) {
    bn.backward_quantized(rec, conv_out, *act, pre, dy, d_pre, d_pre_prefilled, d_conv_out, false);
  } else {
    if (relu)
      relu_backward(rec, pre, dy, d_pre, d_pre_prefilled);
    else if (d_pre_prefilled)
      accumulate(rec, dy, d_pre);
    else
      copy_tensor(rec, dy, d_pre);
    bn.backward(rec, conv_out, pre, d_pre, d_conv_out, false, false);
  }
  conv.backward(rec, x, d_conv_out, dx, accumulate_dx);
}

// ---- BasicBlock ----------------------------------------------------------------------
BasicBlock::BasicBlock(Context& ctx, const std::string& block_name, int n, int c_in, int c_out, int h, int w,
                       int stride)
    : name(block_name),
      c1(ctx, name + ".conv1", name + ".bn1", conv_shape(n, c_in, h, w, c_out, 3, stride, 1), true),
      c2(ctx, name + ".conv2", name + ".bn2",
         conv_shape(n, c_out, c1.conv.shape.out_h(), c1.conv.shape.out_w(), c_out, 3, 1, 1), false) {
  if (stride != 1 || c_in != c_out)
    down.emplace(ctx, name + ".downsample.0", name + ".downsample.1", conv_shape(n, c_in, h, w, c_out, 1, stride, 0),
                 false);
  auto shape = c2.conv.shape.y_shape();
  sum = Tensor(ctx, shape);
  out = Tensor(ctx, shape);
  d_out = Tensor(ctx, shape);
  d_sum = Tensor(ctx, shape);
}

void BasicBlock::forward(Recording& rec, const Tensor& x, bool train) {
  c1.forward(rec, x, train);
  if (down) down->forward(rec, x, train);
  const Tensor& shortcut = down ? down->out : x;
  if (train) {
    // The residual sum in bn2's pass, with the output activation where it can go there too:
    // PACT's forward, or the ReLU when nothing reads the sum (no aux tap).
    c2.conv.forward(rec, c1.out, c2.conv_out, train);
    const auto clip = act_out ? act_out->uniform_clip() : std::nullopt;
    if (clip) {
      BnQuantEpilogue q{clip->clip, clip->levels, clip->inv_levels, &out};
      c2.bn.forward(rec, c2.conv_out, sum, train, false, &q, &shortcut);
      return;
    }
    if (!act_out && !d_sum_prefilled) {
      c2.bn.forward(rec, c2.conv_out, out, train, /*relu=*/true, nullptr, &shortcut);
      return;
    }
    c2.bn.forward(rec, c2.conv_out, sum, train, false, nullptr, &shortcut);
  } else {
    c2.forward(rec, c1.out, train);
    add_forward(rec, c2.out, shortcut, sum);
  }
  if (act_out)
    act_out->forward(rec, sum, out, train);
  else
    relu_forward(rec, sum, out);
}

void BasicBlock::backward(Recording& rec, const Tensor& x, Tensor& dx) {
  if (act_out) {
    // The output quantizer's backward (in bn2's pass for PACT), which also leaves the sum's
    // gradient in d_sum for the shortcut.
    c2.bn.backward_quantized(rec, c2.conv_out, *act_out, sum, d_out, d_sum, d_sum_prefilled, c2.d_conv_out, false,
                             /*write_d_pre=*/true);
    c2.conv.backward(rec, c1.out, c2.d_conv_out, &c1.d_out, false);
  } else {
    relu_backward(rec, out, d_out, d_sum, d_sum_prefilled);
    c2.backward(rec, c1.out, d_sum, &c1.d_out, false);
  }
  c1.backward(rec, x, c1.d_out, &dx, false);
  if (down)
    down->backward(rec, x, d_sum, &dx, true);  // the block input feeds both branches
  else if (!drop_shortcut_grad_for_test)
    accumulate(rec, d_sum, dx);
}

// ---- ResNet --------------------------------------------------------------------------
ResNet::ResNet(Context& ctx, const ModelConfig& cfg, int batch, int blocks_per_stage)
    : Network(ctx, cfg, batch),
      stem(ctx, "conv1", "bn1", conv_shape(batch, cfg.in_channels, cfg.height, cfg.width_px, cfg.width, 3, 1, 1), true) {
  register_conv(stem.conv);
  register_bn(stem.bn);
  int c = cfg.width, h = cfg.height, w = cfg.width_px;
  for (int stage = 0; stage < 3; ++stage) {
    int c_out = cfg.width << stage;
    for (int b = 0; b < blocks_per_stage; ++b) {
      int stride = (stage > 0 && b == 0) ? 2 : 1;
      auto block = std::make_unique<BasicBlock>(ctx, "layer" + std::to_string(stage + 1) + "." + std::to_string(b),
                                                batch, c, c_out, h, w, stride);
      register_conv(block->c1.conv);
      register_bn(block->c1.bn);
      register_conv(block->c2.conv);
      register_bn(block->c2.bn);
      if (block->down) {
        register_conv(block->down->conv);
        register_bn(block->down->bn);
      }
      h = block->c2.conv.shape.out_h();
      w = block->c2.conv.shape.out_w();
      c = c_out;
      blocks.push_back(std::move(block));
    }
  }
  pooled = Tensor(ctx, {batch, c});
  d_pooled = Tensor(ctx, {batch, c});
  fc = LinearLayer(ctx, "fc", c, cfg.classes);
  register_linear(fc);
}

void ResNet::init_layers(InitRng& rng) {
  stem.conv.init(rng);
  stem.bn.init();
  for (auto& b : blocks) {
    b->c1.conv.init(rng);
    b->c1.bn.init();
    b->c2.conv.init(rng);
    b->c2.bn.init();
    if (b->down) {
      b->down->conv.init(rng);
      b->down->bn.init();
    }
  }
  fc.init(rng);
}

void ResNet::forward(Recording& rec, bool train) {
  stem.forward(rec, input_, train);
  const Tensor* x = &stem.out;
  for (auto& b : blocks) {
    b->forward(rec, *x, train);
    x = &b->out;
  }
  global_avg_pool_forward(rec, *x, pooled);
  if (fc_act) fc_act->forward(rec, pooled, pooled_q, train);
  fc.forward(rec, fc_act ? pooled_q : pooled, logits_, train);
}

QuantSites ResNet::quant_sites() {
  QuantSites s;
  auto conv = [&](Conv2dLayer& c) { s.weights.push_back({c.name, &c.weight.value, c.quant.get()}); };
  conv(stem.conv);
  s.acts.push_back({"conv1.act", &stem.pre, stem.act.get()});
  for (auto& b : blocks) {
    conv(b->c1.conv);
    s.acts.push_back({b->name + ".act1", &b->c1.pre, b->c1.act.get()});
    conv(b->c2.conv);
    if (b->down) conv(b->down->conv);
    s.acts.push_back({b->name + ".act2", &b->sum, b->act_out.get()});
  }
  s.acts.push_back({"fc.act", &pooled, fc_act.get()});
  s.weights.push_back({"fc", &fc.weight.value, fc.quant.get()});
  s.classifier = &fc;
  return s;
}

void ResNet::backward(Recording& rec) {
  if (fc_act) {
    fc.backward(rec, pooled_q, d_logits_, &d_pooled_q, false);
    fc_act->backward(rec, pooled, d_pooled_q, d_pooled, false);
  } else {
    fc.backward(rec, pooled, d_logits_, &d_pooled, false);
  }
  global_avg_pool_backward(rec, d_pooled, blocks.back()->d_out, false);
  for (size_t i = blocks.size(); i-- > 0;) {
    const Tensor& x = i ? blocks[i - 1]->out : stem.out;
    Tensor& dx = i ? blocks[i - 1]->d_out : stem.d_out;
    blocks[i]->backward(rec, x, dx);
  }
  stem.backward(rec, input_, stem.d_out, nullptr, false);
}

void ResNet::apply_quant_policy(QuantPolicy& policy) {
  auto weight = [&](Conv2dLayer& c, LayerRole role) {
    c.set_quantizer(ctx_, policy.weight(ctx_, c.name, c.weight.value, role));
    if (c.quant) register_quantizer_state(c.quant->parameters(), c.quant->state());
  };
  auto act = [&](std::unique_ptr<ActQuantizer>& slot, const std::string& name, const Tensor& t, LayerRole consumer) {
    slot = policy.activation(ctx_, name, t.shape(), consumer);
    if (slot) register_act_quantizer(slot.get());
  };
  weight(stem.conv, LayerRole::First);
  act(stem.act, "conv1.act", stem.out, LayerRole::Middle);
  if (stem.act) stem.split_activation(ctx_);
  for (auto& b : blocks) {
    const std::string& name = b->name;
    weight(b->c1.conv, LayerRole::Middle);
    weight(b->c2.conv, LayerRole::Middle);
    if (b->down) weight(b->down->conv, LayerRole::Middle);
    act(b->c1.act, name + ".act1", b->c1.out, LayerRole::Middle);
    if (b->c1.act) b->c1.split_activation(ctx_);
    act(b->act_out, name + ".act2", b->out, LayerRole::Middle);
  }
  act(fc_act, "fc.act", pooled, LayerRole::Last);
  if (fc_act && !pooled_q.defined()) {
    pooled_q = Tensor(ctx_, pooled.shape());
    d_pooled_q = Tensor(ctx_, pooled.shape());
  }
  fc.set_quantizer(ctx_, policy.weight(ctx_, "fc", fc.weight.value, LayerRole::Last));
  if (fc.quant) register_quantizer_state(fc.quant->parameters(), fc.quant->state());
  policy.finish();
  wire_input_grids();
}

void wire_input_grids(Context& ctx, const std::vector<std::pair<Conv2dLayer*, std::optional<Grid>>>& inputs,
                      Tensor& scratch) {
  int64_t most = 0;
  for (auto& [conv, grid] : inputs)
    if (grid) most = std::max(most, int64_t(conv->shape.n) * conv->shape.c_in * conv->shape.h * conv->shape.w);
  if (most > 0 && (!scratch.defined() || scratch.numel() < most)) scratch = Tensor(ctx, {int(most)});
  for (auto& [conv, grid] : inputs) conv->set_input_grid(ctx, grid, &scratch);
}

void ResNet::wire_input_grids() {
  // Each conv's input is the output of the previous activation quantizer (the stem conv's
  // is the image, never quantized).
  std::vector<std::pair<Conv2dLayer*, std::optional<Grid>>> inputs;
  std::optional<Grid> in = output_grid(stem.act);
  for (auto& b : blocks) {
    inputs.push_back({&b->c1.conv, in});
    if (b->down) inputs.push_back({&b->down->conv, in});
    inputs.push_back({&b->c2.conv, output_grid(b->c1.act)});
    in = output_grid(b->act_out);
  }
  nn::wire_input_grids(ctx_, inputs, grid_scratch);
}

std::vector<FeatureTap> ResNet::feature_taps() {
  // The stem's BN output before its activation, then every block's residual sum. The aux
  // module writes its gradient straight into the gradient buffer of each point, and this
  // network's backward adds its own: no separate buffer, no extra accumulate pass.
  stem.d_pre_prefilled = true;
  stem.split_activation(ctx_);
  std::vector<FeatureTap> taps{{"conv1", &stem.pre, &stem.d_pre}};
  for (auto& b : blocks) {
    b->d_sum_prefilled = true;
    taps.push_back({b->name, &b->sum, &b->d_sum});
  }
  return taps;
}

// ---- PlainCnn ------------------------------------------------------------------------
PlainCnn::PlainCnn(Context& ctx, const ModelConfig& cfg, int batch)
    : Network(ctx, cfg, batch),
      u1(ctx, "conv1", "bn1", conv_shape(batch, cfg.in_channels, cfg.height, cfg.width_px, cfg.width, 3, 1, 1), true),
      p1(ctx, {batch, cfg.width, cfg.height / 2, cfg.width_px / 2}),
      d_p1(ctx, {batch, cfg.width, cfg.height / 2, cfg.width_px / 2}),
      u2(ctx, "conv2", "bn2", conv_shape(batch, cfg.width, cfg.height / 2, cfg.width_px / 2, 2 * cfg.width, 3, 1, 1),
         true),
      p2(ctx, {batch, 2 * cfg.width, cfg.height / 4, cfg.width_px / 4}),
      d_p2(ctx, {batch, 2 * cfg.width, cfg.height / 4, cfg.width_px / 4}),
      u3(ctx, "conv3", "bn3", conv_shape(batch, 2 * cfg.width, cfg.height / 4, cfg.width_px / 4, 4 * cfg.width, 3, 1, 1),
         true),
      pooled(ctx, {batch, 4 * cfg.width}),
      d_pooled(ctx, {batch, 4 * cfg.width}),
      fc(ctx, "fc", 4 * cfg.width, cfg.classes) {
  for (ConvBnUnit* u : {&u1, &u2, &u3}) {
    register_conv(u->conv);
    register_bn(u->bn);
  }
  register_linear(fc);
}

void PlainCnn::init_layers(InitRng& rng) {
  for (ConvBnUnit* u : {&u1, &u2, &u3}) {
    u->conv.init(rng);
    u->bn.init();
  }
  fc.init(rng);
}

void PlainCnn::forward(Recording& rec, bool train) {
  u1.forward(rec, input_, train);
  maxpool2x2_forward(rec, u1.out, p1);
  u2.forward(rec, p1, train);
  maxpool2x2_forward(rec, u2.out, p2);
  u3.forward(rec, p2, train);
  global_avg_pool_forward(rec, u3.out, pooled);
  fc.forward(rec, pooled, logits_);
}

QuantSites PlainCnn::quant_sites() {
  QuantSites s;
  for (ConvBnUnit* u : {&u1, &u2, &u3}) {
    s.weights.push_back({u->conv.name, &u->conv.weight.value, u->conv.quant.get()});
    s.acts.push_back({u->conv.name + ".act", &u->pre, u->act.get()});
  }
  s.acts.push_back({"fc.act", &pooled, nullptr});
  s.weights.push_back({"fc", &fc.weight.value, fc.quant.get()});
  s.classifier = &fc;
  return s;
}

void PlainCnn::backward(Recording& rec) {
  fc.backward(rec, pooled, d_logits_, &d_pooled, false);
  global_avg_pool_backward(rec, d_pooled, u3.d_out, false);
  u3.backward(rec, p2, u3.d_out, &d_p2, false);
  maxpool2x2_backward(rec, u2.out, d_p2, u2.d_out, false);
  u2.backward(rec, p1, u2.d_out, &d_p1, false);
  maxpool2x2_backward(rec, u1.out, d_p1, u1.d_out, false);
  u1.backward(rec, input_, u1.d_out, nullptr, false);
}

}  // namespace vkqat::nn

#include "nn/model/resnet.h"
#include "nn/ops/add.h"
#include "nn/ops/pool.h"

namespace vkqat::nn {

static Conv2dShape conv3(int n, int c_in, int h, int w, int c_out, int k, int stride, int pad) {
  Conv2dShape s;
  s.n = n, s.c_in = c_in, s.h = h, s.w = w, s.c_out = c_out, s.kh = s.kw = k, s.stride = stride, s.pad = pad;
  return s;
}

PreActBlock::PreActBlock(Context& ctx, const std::string& block_name, int n, int c_in, int c_out, int h, int w,
                         int stride)
    : name(block_name),
      bn1(ctx, name + ".bn1", n, c_in),
      bn2(ctx, name + ".bn2", n, c_out),
      conv1(ctx, name + ".conv1", conv3(n, c_in, h, w, c_out, 3, stride, 1)),
      conv2(ctx, name + ".conv2", conv3(n, c_out, conv1.shape.out_h(), conv1.shape.out_w(), c_out, 3, 1, 1)) {
  if (stride != 1 || c_in != c_out) down.emplace(ctx, name + ".downsample.0", conv3(n, c_in, h, w, c_out, 1, stride, 0));
  const std::vector<int> in_shape{n, c_in, h, w}, mid = conv1.shape.y_shape();
  o1 = Tensor(ctx, in_shape), d_o1 = Tensor(ctx, in_shape);
  h1 = Tensor(ctx, mid), d_h1 = Tensor(ctx, mid), o2 = Tensor(ctx, mid), d_o2 = Tensor(ctx, mid);
  out = Tensor(ctx, mid), d_out = Tensor(ctx, mid);
  if (down) sc = Tensor(ctx, mid);
}

void PreActBlock::forward(Recording& rec, const Tensor& x, bool train) {
  if (act1)
    bn1.forward_quantized(rec, x, *act1, pre1, o1, train);
  else
    bn1.forward(rec, x, o1, train, /*relu=*/true);
  if (down) down->forward(rec, o1, sc, train);
  conv1.forward(rec, o1, h1, train);
  if (act2)
    bn2.forward_quantized(rec, h1, *act2, pre2, o2, train);
  else
    bn2.forward(rec, h1, o2, train, /*relu=*/true);
  conv2.forward(rec, o2, out, train);
  accumulate(rec, down ? sc : x, out);  // out = conv2(...) + shortcut
}

void PreActBlock::backward(Recording& rec, const Tensor& x, Tensor& dx) {
  conv2.backward(rec, o2, d_out, &d_o2, false);
  if (act2)
    bn2.backward_quantized(rec, h1, *act2, pre2, d_o2, d_pre2, false, d_h1, false);
  else
    bn2.backward(rec, h1, o2, d_o2, d_h1, /*relu=*/true, false);
  conv1.backward(rec, o1, d_h1, &d_o1, false);
  if (down) down->backward(rec, o1, d_out, &d_o1, true);  // bn1's activation feeds both branches
  if (act1)
    bn1.backward_quantized(rec, x, *act1, pre1, d_o1, d_pre1, false, dx, dx_prefilled);
  else
    bn1.backward(rec, x, o1, d_o1, dx, /*relu=*/true, dx_prefilled);
  if (!down) accumulate(rec, d_out, dx);  // identity shortcut
}

PreActResNet::PreActResNet(Context& ctx, const ModelConfig& cfg, int batch, int blocks_per_stage)
    : Network(ctx, cfg, batch),
      stem(ctx, "conv1", conv3(batch, cfg.in_channels, cfg.height, cfg.width_px, cfg.width, 3, 1, 1)) {
  register_conv(stem);
  stem_out = Tensor(ctx, stem.shape.y_shape());
  d_stem_out = Tensor(ctx, stem.shape.y_shape());
  int c = cfg.width, h = cfg.height, w = cfg.width_px;
  for (int stage = 0; stage < 3; ++stage) {
    int c_out = cfg.width << stage;
    for (int b = 0; b < blocks_per_stage; ++b) {
      int stride = (stage > 0 && b == 0) ? 2 : 1;
      auto blk = std::make_unique<PreActBlock>(ctx, "layer" + std::to_string(stage + 1) + "." + std::to_string(b), batch,
                                               c, c_out, h, w, stride);
      register_bn(blk->bn1);
      register_conv(blk->conv1);
      register_bn(blk->bn2);
      register_conv(blk->conv2);
      if (blk->down) register_conv(*blk->down);
      h = blk->conv1.shape.out_h(), w = blk->conv1.shape.out_w(), c = c_out;
      blocks.push_back(std::move(blk));
    }
  }
  final_bn = BatchNorm2dLayer(ctx, "bn", batch, c);
  register_bn(final_bn);
  final_out = Tensor(ctx, {batch, c, h, w});
  d_final_out = Tensor(ctx, {batch, c, h, w});
  pooled = Tensor(ctx, {batch, c});
  d_pooled = Tensor(ctx, {batch, c});
  fc = LinearLayer(ctx, "fc", c, cfg.classes);
  register_linear(fc);
}

void PreActResNet::init_layers(InitRng& rng) {
  stem.init(rng);
  for (auto& b : blocks) {
    b->bn1.init();
    b->conv1.init(rng);
    b->bn2.init();
    b->conv2.init(rng);
    if (b->down) b->down->init(rng);
  }
  final_bn.init();
  fc.init(rng);
}

void PreActResNet::forward(Recording& rec, bool train) {
  stem.forward(rec, input_, stem_out, train);
  const Tensor* x = &stem_out;
  for (auto& b : blocks) {
    b->forward(rec, *x, train);
    x = &b->out;
  }
  if (final_act)
    final_bn.forward_quantized(rec, *x, *final_act, final_pre, final_out, train);
  else
    final_bn.forward(rec, *x, final_out, train, /*relu=*/true);
  global_avg_pool_forward(rec, final_out, pooled);
  if (fc_act) fc_act->forward(rec, pooled, pooled_q, train);
  fc.forward(rec, fc_act ? pooled_q : pooled, logits_, train);
}

void PreActResNet::backward(Recording& rec) {
  if (fc_act) {
    fc.backward(rec, pooled_q, d_logits_, &d_pooled_q, false);
    fc_act->backward(rec, pooled, d_pooled_q, d_pooled, false);
  } else {
    fc.backward(rec, pooled, d_logits_, &d_pooled, false);
  }
  global_avg_pool_backward(rec, d_pooled, d_final_out, false);
  Tensor& d_last = blocks.back()->d_out;
  if (final_act)
    final_bn.backward_quantized(rec, blocks.back()->out, *final_act, final_pre, d_final_out, d_final_pre, false, d_last,
                                last_d_out_prefilled);
  else
    final_bn.backward(rec, blocks.back()->out, final_out, d_final_out, d_last, /*relu=*/true, last_d_out_prefilled);
  for (size_t i = blocks.size(); i-- > 0;) {
    const Tensor& x = i ? blocks[i - 1]->out : stem_out;
    Tensor& dx = i ? blocks[i - 1]->d_out : d_stem_out;
    blocks[i]->backward(rec, x, dx);
  }
  stem.backward(rec, input_, d_stem_out, nullptr, false);
}

// Same policy as ResNet (METHODS.md section 5): a quantizer wherever the FP32 net has a ReLU
// (after bn1, bn2 and the final BN), the FC input quantized, first conv and FC at edge bits.
// The stem conv has no activation after it here: its output feeds bn1 of the first block.
QuantSites PreActResNet::quant_sites() {
  QuantSites s;
  auto conv = [&](Conv2dLayer& c) { s.weights.push_back({c.name, &c.weight.value, c.quant.get()}); };
  conv(stem);
  for (auto& b : blocks) {
    s.acts.push_back({b->name + ".act1", &b->pre1, b->act1.get()});
    conv(b->conv1);
    s.acts.push_back({b->name + ".act2", &b->pre2, b->act2.get()});
    conv(b->conv2);
    if (b->down) conv(*b->down);
  }
  s.acts.push_back({"bn.act", &final_pre, final_act.get()});
  s.acts.push_back({"fc.act", &pooled, fc_act.get()});
  s.weights.push_back({"fc", &fc.weight.value, fc.quant.get()});
  s.classifier = &fc;
  return s;
}

void PreActResNet::apply_quant_policy(QuantPolicy& policy) {
  auto weight = [&](Conv2dLayer& c, LayerRole role) {
    c.set_quantizer(ctx_, policy.weight(ctx_, c.name, c.weight.value, role));
    if (c.quant) register_quantizer_state(c.quant->parameters(), c.quant->state());
  };
  // A quantizer where the FP32 net has a ReLU after a BN; BN's output then goes to `pre`.
  auto bn_act = [&](std::unique_ptr<ActQuantizer>& slot, const std::string& name, const Tensor& out, Tensor& pre,
                    Tensor& d_pre) {
    slot = policy.activation(ctx_, name, out.shape(), LayerRole::Middle);
    if (!slot) return;
    register_act_quantizer(slot.get());
    if (!pre.defined()) pre = Tensor(ctx_, out.shape());
    // A uniform-clip quantizer's backward runs inside BN's: no gradient of pre.
    if (!d_pre.defined() && !slot->uniform_clip()) d_pre = Tensor(ctx_, out.shape());
  };
  weight(stem, LayerRole::First);
  for (auto& b : blocks) {
    weight(b->conv1, LayerRole::Middle);
    weight(b->conv2, LayerRole::Middle);
    if (b->down) weight(*b->down, LayerRole::Middle);
    bn_act(b->act1, b->name + ".act1", b->o1, b->pre1, b->d_pre1);
    bn_act(b->act2, b->name + ".act2", b->o2, b->pre2, b->d_pre2);
  }
  bn_act(final_act, "bn.act", final_out, final_pre, d_final_pre);
  fc_act = policy.activation(ctx_, "fc.act", pooled.shape(), LayerRole::Last);
  if (fc_act) {
    register_act_quantizer(fc_act.get());
    if (!pooled_q.defined()) pooled_q = Tensor(ctx_, pooled.shape()), d_pooled_q = Tensor(ctx_, pooled.shape());
  }
  fc.set_quantizer(ctx_, policy.weight(ctx_, "fc", fc.weight.value, LayerRole::Last));
  if (fc.quant) register_quantizer_state(fc.quant->parameters(), fc.quant->state());
  policy.finish();
  // Exact evaluation: conv1 and the downsample conv read act1's output, conv2 act2's (the
  // stem conv reads the image, never quantized).
  std::vector<std::pair<Conv2dLayer*, std::optional<Grid>>> inputs;
  for (auto& b : blocks) {
    inputs.push_back({&b->conv1, output_grid(b->act1)});
    if (b->down) inputs.push_back({&*b->down, output_grid(b->act1)});
    inputs.push_back({&b->conv2, output_grid(b->act2)});
  }
  wire_input_grids(ctx_, inputs, grid_scratch);
}

std::vector<FeatureTap> PreActResNet::feature_taps() {
  // The stem's output (no activation follows it here), then every block's residual sum.
  // Their gradients are written by the next block's backward (or the final BN's), which
  // adds to what the aux module put there.
  std::vector<FeatureTap> taps{{"conv1", &stem_out, &d_stem_out}};
  blocks.front()->dx_prefilled = true;
  for (size_t i = 0; i < blocks.size(); ++i) {
    taps.push_back({blocks[i]->name, &blocks[i]->out, &blocks[i]->d_out});
    if (i + 1 < blocks.size()) blocks[i + 1]->dx_prefilled = true;
  }
  last_d_out_prefilled = true;
  return taps;
}

}  // namespace vkqat::nn

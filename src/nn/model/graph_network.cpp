#include "nn/model/graph_network.h"

#include <functional>

#include "backend/error.h"
#include "nn/model/graph_network_node.h"
#include "nn/model/quant_wiring.h"  // wire_input_grids, output_grid
#include "nn/ops/add.h"
#include "nn/ops/dropout.h"
#include "nn/ops/pool.h"
#include "nn/ops/relu.h"

namespace vkqat::nn {

using graph_detail::batched;
using graph_detail::Mode;

// The 2x2 stride-2 unpadded pool has its own faster kernels.
static bool is_2x2(const Pool2dShape& s) { return s.k == 2 && s.stride == 2 && s.pad == 0; }

GraphNetwork::GraphNetwork(Context& ctx, const ModelDescription& desc, const ModelConfig& cfg, int batch,
                           bool reuse_buffers)
    : Network(ctx, cfg, batch), desc_(desc), reuse_(reuse_buffers), forward_only_(cfg.forward_only) {
  const std::string where = "model description " + desc_.source;
  if (desc_.in_channels != cfg.in_channels || desc_.height != cfg.height || desc_.width != cfg.width_px ||
      desc_.classes != cfg.classes)
    throw Error(where + ": takes " + dims_str({desc_.in_channels, desc_.height, desc_.width}) + " images and " +
                std::to_string(desc_.classes) + " classes, the data has " +
                dims_str({cfg.in_channels, cfg.height, cfg.width_px}) + " and " + std::to_string(cfg.classes));
  const int n_layers = int(desc_.layers.size());
  int last_linear = -1;
  for (int i = 0; i < n_layers; ++i)
    if (desc_.layers[size_t(i)].op == LayerOp::Linear) last_linear = i;
  for (int i = 0; i < n_layers; ++i) {
    auto nd = std::make_unique<Node>();
    Node& n = *nd;
    n.d = desc_.layers[size_t(i)];
    n.last = i + 1 == n_layers;
    n.classifier = i == last_linear;
    const std::string what = where + ": layer '" + n.d.name + "' (" + layer_op_name(n.d.op) + "): ";
    auto refuse = [&](const std::string& why) { throw Error(what + why); };
    const std::vector<int> x = n.d.input_index[0] < 0 ? std::vector<int>{desc_.in_channels, desc_.height, desc_.width}
                                                      : desc_.layers[size_t(n.d.input_index[0])].shape;
    try {
      switch (n.d.op) {
        case LayerOp::Conv: {
          if (n.d.bias) refuse("conv bias is not supported by the engine (follow the conv with a batchnorm)");
          if (n.d.groups != 1 && !(n.d.groups == x[0] && n.d.groups == n.d.out))
            refuse("groups " + std::to_string(n.d.groups) + " is neither 1 nor depthwise (= input and output channels)");
          Conv2dShape s;
          s.n = batch, s.c_in = x[0], s.h = x[1], s.w = x[2], s.c_out = n.d.out, s.kh = s.kw = n.d.kernel;
          s.stride = n.d.stride, s.pad = n.d.padding, s.groups = n.d.groups;
          n.conv = std::make_unique<Conv2dLayer>(ctx, n.d.name, s);
          register_conv(*n.conv);
          break;
        }
        case LayerOp::BatchNorm:
          n.bn = std::make_unique<BatchNorm2dLayer>(ctx, n.d.name, batch, x[0]);
          register_bn(*n.bn);
          break;
        case LayerOp::Linear:
          if (!n.d.bias) refuse("a linear layer without bias is not supported by the engine");
          n.linear = std::make_unique<LinearLayer>(ctx, n.d.name, x[0], n.d.out);
          register_linear(*n.linear);
          break;
        case LayerOp::MaxPool:
          n.pool.n = batch, n.pool.c = x[0], n.pool.h = x[1], n.pool.w = x[2];
          n.pool.k = n.d.kernel, n.pool.stride = n.d.stride, n.pool.pad = n.d.padding;
          n.pool.validate();
          break;
        case LayerOp::Dropout:
          n.dropout.p = n.d.p;
          n.dropout.validate();
          if (!dropout_step_.defined()) {
            dropout_step_ = Tensor(ctx, {1}, DType::U32);
            dropout_step_.upload_u32({0u});
          }
          break;
        default:
          break;
      }
    } catch (const Error& e) {
      const std::string msg = e.what();
      if (msg.rfind(where, 0) == 0) throw;
      throw Error(what + msg);
    }
    nodes_.push_back(std::move(nd));
  }
  for (int i = 0; i < n_layers; ++i)
    for (int j : node(i).d.input_index)
      if (j >= 0) node(j).consumers.push_back(i);
  Node& last = *nodes_.back();
  last.out = Tensor::alias(logits_, batched(batch, last.d.shape));
  last.grad = Tensor::alias(d_logits_, batched(batch, last.d.shape));
  plan();
}

GraphNetwork::~GraphNetwork() = default;

void GraphNetwork::init_layers(InitRng& rng) {
  for (auto& n : nodes_) {
    if (n->conv) n->conv->init(rng);
    if (n->bn) n->bn->init();
    if (n->linear) n->linear->init(rng);
  }
  // Drawn after the weights, so a dropout layer leaves the other layers' initialisation as
  // it is without one.
  for (auto& n : nodes_)
    if (n->d.op == LayerOp::Dropout) {
      const uint32_t hi = uint32_t(rng.uniform(0.f, 1.f) * 65535.f), lo = uint32_t(rng.uniform(0.f, 1.f) * 65535.f);
      n->dropout.seed = hi << 16 | lo;
    }
}

void GraphNetwork::advance_step(Recording& rec) {
  if (dropout_step_.defined()) dropout_advance(rec, dropout_step_);
}

void GraphNetwork::set_step(int64_t step) {
  if (dropout_step_.defined()) dropout_step_.upload_u32({uint32_t(uint64_t(step))});
}

bool GraphNetwork::has_residual_blocks() const {
  if (!desc_.taps.empty()) return true;
  for (const auto& n : nodes_)
    if (n->d.op == LayerOp::Add) return true;
  return false;
}

void GraphNetwork::drop_add_input_grad_for_test(const std::string& add_layer, int input) {
  const int i = desc_.index_of(add_layer);
  if (i < 0 || node(i).d.op != LayerOp::Add) throw Error("drop_add_input_grad_for_test: no add layer " + add_layer);
  node(i).drop_input = input;
  plan();  // that input no longer reads the add's gradient buffer
}

void GraphNetwork::plan() {
  for (auto& n : nodes_) n->mode = Mode::Plain, n->relu = n->bn_node = n->shortcut = -1;
  const int n_layers = int(nodes_.size());
  auto only_consumer = [&](int i, LayerOp op) {
    const Node& n = node(i);
    return n.consumers.size() == 1 && node(n.consumers[0]).d.op == op ? n.consumers[0] : -1;
  };
  // batchnorm -> add -> relu: the sum in BN's pass (ResNet's BasicBlock end). The add's
  // first input wins when both are batchnorms (the main branch; the other is the shortcut's).
  for (int a = 0; a < n_layers; ++a) {
    Node& add = node(a);
    if (add.d.op != LayerOp::Add || add.d.input_index[0] == add.d.input_index[1]) continue;
    const int r = only_consumer(a, LayerOp::Relu);
    if (r < 0 || node(r).last) continue;
    for (int k = 0; k < 2; ++k) {
      const int b = add.d.input_index[size_t(k)];
      if (b < 0 || node(b).d.op != LayerOp::BatchNorm || node(b).consumers.size() != 1 || node(b).tapped) continue;
      add.mode = node(b).mode = Mode::Residual;
      node(r).mode = Mode::Skip;
      add.bn_node = b, add.relu = r, add.shortcut = 1 - k;
      break;
    }
  }
  // batchnorm -> relu (its only consumer): the ReLU or the activation quantizer in BN's pass.
  // A relu6 only with a quantizer, which replaces it (BN's kernels clamp at 0 only).
  for (int b = 0; b < n_layers; ++b) {
    Node& bn = node(b);
    if (bn.d.op != LayerOp::BatchNorm || bn.mode != Mode::Plain) continue;
    int r = only_consumer(b, LayerOp::Relu);
    if (r < 0) {
      r = only_consumer(b, LayerOp::Relu6);
      if (r >= 0 && !node(r).act) r = -1;
    }
    if (r < 0 || node(r).last) continue;
    if (node(r).act)
      bn.mode = Mode::BnAct;
    else if (!bn.tapped)
      bn.mode = Mode::BnRelu;
    else
      continue;
    bn.relu = r;
    node(r).mode = Mode::Skip;
  }
  // An add passes its gradient through unchanged: an input whose only consumer it is (and
  // whose gradient the aux module does not add to) reads the add's gradient buffer instead of
  // a copy (the 1x1 shortcut's BN, pre-activation blocks' conv2).
  for (auto& np : nodes_) np->grad_from_add = -1;
  for (int a = 0; a < n_layers; ++a) {
    Node& add = node(a);
    if (add.d.op != LayerOp::Add || add.d.input_index[0] == add.d.input_index[1]) continue;
    for (int k = 0; k < 2; ++k) {
      const int j = add.d.input_index[size_t(k)];
      if (j < 0 || (add.mode == Mode::Residual && j == add.bn_node)) continue;
      if (node(j).consumers.size() == 1 && !node(j).tapped && !node(j).signed_act && add.drop_input != k)
        node(j).grad_from_add = a;
    }
  }
  place_buffers();  // graph_network_buffers.cpp
}

// A batchnorm or add whose value reaches a conv or (non-classifier) linear through max
// pool / flatten / dropout only, and no relu reads it: it needs a signed quantizer.
bool GraphNetwork::is_linear_bottleneck(int i) {
  const Node& n = node(i);
  if ((n.d.op != LayerOp::Add && n.d.op != LayerOp::BatchNorm) || n.last) return false;
  std::function<bool(int)> reaches_weights = [&](int k) {
    for (int c : node(k).consumers) {
      const LayerOp op = node(c).d.op;
      if (op == LayerOp::Conv || (op == LayerOp::Linear && !node(c).classifier)) return true;
      if ((op == LayerOp::MaxPool || op == LayerOp::Flatten || op == LayerOp::Dropout) && reaches_weights(c)) return true;
    }
    return false;
  };
  for (int c : n.consumers)
    if (node(c).d.op == LayerOp::Relu || node(c).d.op == LayerOp::Relu6) return false;
  return reaches_weights(i);
}

void GraphNetwork::apply_quant_policy(QuantPolicy& policy) {
  for (int i = 0; i < int(nodes_.size()); ++i) {
    Node& n = node(i);
    if (!is_linear_bottleneck(i)) continue;
    const std::vector<int> shape = batched(batch_, n.d.shape);
    if (desc_.index_of(n.d.name + ".act") >= 0)
      throw Error("model description " + desc_.source + ": layer '" + n.d.name + "' needs a signed activation quantizer '" +
                  n.d.name + ".act', but a layer has that name (rename it)");
    n.signed_act = policy.signed_activation(ctx_, n.d.name + ".act", shape);
    if (!n.signed_act) continue;
    register_act_quantizer(n.signed_act.get());  // q_out / d_q_out: plan()
  }
  for (auto& np : nodes_) {
    Node& n = *np;
    if (n.conv) {
      const LayerRole role = n.d.input_index[0] < 0 ? LayerRole::First : LayerRole::Middle;
      n.conv->set_quantizer(ctx_, policy.weight(ctx_, n.d.name, n.conv->weight.value, role));
      if (n.conv->quant) register_quantizer_state(n.conv->quant->parameters(), n.conv->quant->state());
    } else if (n.d.op == LayerOp::Relu || n.d.op == LayerOp::Relu6) {  // PACT replaces ReLU6 too
      n.act = policy.activation(ctx_, n.d.name, batched(batch_, n.d.shape), LayerRole::Middle);
      if (n.act) register_act_quantizer(n.act.get());
    } else if (n.linear) {
      if (n.classifier) {
        const std::vector<int> in_shape{batch_, n.linear->in};
        n.act = policy.activation(ctx_, n.d.name + ".act", in_shape, LayerRole::Last);
        if (n.act) register_act_quantizer(n.act.get());  // q_in / d_q_in: plan()
      }
      n.linear->set_quantizer(
          ctx_, policy.weight(ctx_, n.d.name, n.linear->weight.value, n.classifier ? LayerRole::Last : LayerRole::Middle));
      if (n.linear->quant) register_quantizer_state(n.linear->quant->parameters(), n.linear->quant->state());
    }
  }
  policy.finish();
  plan();
  // Exact evaluation: a conv whose input is an activation quantizer's output convolves its
  // integer levels (nn/ops/grid.h). Max pool, flatten and dropout (identity in eval) keep
  // values on their input's grid, so the walk back passes through them.
  std::vector<std::pair<Conv2dLayer*, std::optional<Grid>>> inputs;
  for (auto& n : nodes_) {
    if (!n->conv) continue;
    int j = n->d.input_index[0];
    while (j >= 0 && (node(j).d.op == LayerOp::MaxPool || node(j).d.op == LayerOp::Flatten ||
                      node(j).d.op == LayerOp::Dropout))
      j = node(j).d.input_index[0];
    std::optional<Grid> g;
    if (j >= 0 && (node(j).d.op == LayerOp::Relu || node(j).d.op == LayerOp::Relu6)) g = output_grid(node(j).act);
    if (j >= 0 && node(j).signed_act) g = output_grid(node(j).signed_act);
    inputs.push_back({n->conv.get(), g});
  }
  nn::wire_input_grids(ctx_, inputs, grid_scratch_);
}

bool GraphNetwork::conv_exact_eval(const std::string& name) const {
  const int i = desc_.index_of(name);
  return i >= 0 && nodes_[size_t(i)]->conv && nodes_[size_t(i)]->conv->exact_eval();
}

std::vector<FeatureTap> GraphNetwork::feature_taps() {
  std::vector<int> idx;
  if (!desc_.taps.empty())
    for (const auto& t : desc_.taps) idx.push_back(desc_.index_of(t));
  else
    for (int i = 0; i < int(nodes_.size()); ++i)
      if (node(i).d.op == LayerOp::Add) idx.push_back(i);
  for (int i : idx) node(i).tapped = true;
  plan();  // a tapped value is written, its gradient buffer added to
  std::vector<FeatureTap> taps;
  for (int i : idx) taps.push_back({node(i).d.name, &node(i).out, &node(i).grad});
  return taps;
}

QuantSites GraphNetwork::quant_sites() {
  QuantSites s;
  for (int i = 0; i < int(nodes_.size()); ++i) {
    Node& n = node(i);
    if (n.conv) s.weights.push_back({n.d.name, &n.conv->weight.value, n.conv->quant.get()});
    if (n.signed_act) s.acts.push_back({n.d.name + ".act", &n.out, n.signed_act.get()});
    if (n.d.op == LayerOp::Relu || n.d.op == LayerOp::Relu6) {
      const int j = n.d.input_index[0];
      const Tensor* in = j < 0 ? &input_ : &node(j).out;
      if (j >= 0 && ((node(j).mode == Mode::BnRelu) || (node(j).mode == Mode::Residual && !node(j).out.defined())))
        in = &undefined_;  // the ReLU is fused into the BN: no separate pre-activation
      s.acts.push_back({n.d.name, in, n.act.get()});
    }
    if (n.linear) {
      if (n.classifier) {
        const int j = n.d.input_index[0];
        s.acts.push_back({n.d.name + ".act", j < 0 ? &input_ : &node(j).out, n.act.get()});
        s.classifier = n.linear.get();
      }
      s.weights.push_back({n.d.name, &n.linear->weight.value, n.linear->quant.get()});
    }
  }
  return s;
}

void GraphNetwork::forward(Recording& rec, bool train) {
  if (train && forward_only_)
    throw Error("model description " + desc_.source + ": a training forward of a network built for forward only "
                "(ModelConfig::forward_only: its buffers are planned for evaluation)");
  auto in = [&](const Node& n, int k) -> const Tensor& {
    const int j = n.d.input_index[size_t(k)];
    return j < 0 ? input_ : consumed(j);
  };
  for (int i = 0; i < int(nodes_.size()); ++i) {
    Node& n = node(i);
    const Tensor& x = in(n, 0);
    switch (n.d.op) {
      case LayerOp::Conv:
        n.conv->forward(rec, x, n.out, train);
        break;
      case LayerOp::BatchNorm:
        if (n.mode == Mode::BnRelu)
          n.bn->forward(rec, x, node(n.relu).out, train, /*relu=*/true);
        else if (n.mode == Mode::BnAct)
          n.bn->forward_quantized(rec, x, *node(n.relu).act, n.out, node(n.relu).out, train);
        else if (n.mode == Mode::Plain || !train)
          n.bn->forward(rec, x, n.out, train, false);  // Residual in training: at the add
        break;
      case LayerOp::Relu:
      case LayerOp::Relu6:
        if (n.mode == Mode::Skip) break;
        if (n.act)
          n.act->forward(rec, x, n.out, train);
        else if (n.d.op == LayerOp::Relu)
          relu_forward(rec, x, n.out);
        else
          relu6_forward(rec, x, n.out);
        break;
      case LayerOp::Add: {
        if (n.mode != Mode::Residual) {
          add_forward(rec, x, in(n, 1), n.out);
          break;
        }
        Node& b = node(n.bn_node);
        Node& r = node(n.relu);
        const Tensor& bx = in(b, 0);
        const Tensor& shortcut = in(n, n.shortcut);
        if (!train) {  // the epilogues are for training: BN wrote its output at its place
          if (!r.act && !n.tapped) {
            add_forward(rec, b.out, shortcut, r.out, /*relu=*/true);
            break;
          }
          add_forward(rec, b.out, shortcut, n.out);
        } else {
          const auto clip = r.act ? r.act->uniform_clip() : std::nullopt;
          if (clip) {
            BnQuantEpilogue q{clip->clip, clip->levels, clip->inv_levels, &r.out};
            b.bn->forward(rec, bx, n.out, train, false, &q, &shortcut);
            break;
          }
          if (!r.act && !n.tapped) {
            b.bn->forward(rec, bx, r.out, train, /*relu=*/true, nullptr, &shortcut);
            break;
          }
          b.bn->forward(rec, bx, n.out, train, false, nullptr, &shortcut);
        }
        if (r.act)
          r.act->forward(rec, n.out, r.out, train);
        else
          relu_forward(rec, n.out, r.out);
        break;
      }
      case LayerOp::MaxPool:
        if (is_2x2(n.pool))
          maxpool2x2_forward(rec, x, n.out);
        else
          maxpool2d_forward(rec, n.pool, x, n.out);
        break;
      case LayerOp::GlobalAvgPool:
        global_avg_pool_forward(rec, x, n.out);
        break;
      case LayerOp::Flatten:
        rec.copy(x.view(), n.out.view(), "flatten");
        break;
      case LayerOp::Linear:
        if (n.act) {
          n.act->forward(rec, x, n.q_in, train);
          n.linear->forward(rec, n.q_in, n.out, train);
        } else {
          n.linear->forward(rec, x, n.out, train);
        }
        break;
      case LayerOp::Dropout:  // eval: a copy
        dropout_forward(rec, n.dropout, dropout_step_, x, n.out, train);
        break;
    }
    if (n.signed_act) n.signed_act->forward(rec, n.out, n.q_out, train);
  }
}

const Tensor& GraphNetwork::consumed(int j) { return node(j).signed_act ? node(j).q_out : node(j).out; }

Tensor* GraphNetwork::grad_target(int i, int k, bool& accumulate) {
  accumulate = false;
  const Node& n = node(i);
  const int j = n.d.input_index[size_t(k)];
  if (j < 0) {
    if (n.d.op == LayerOp::Conv || n.d.op == LayerOp::Add) return nullptr;
    // A batchnorm, pool or relu reading the image computes its input's gradient anyway.
    if (!d_image_.defined()) d_image_ = Tensor(ctx_, input_.shape());
    return &d_image_;
  }
  Node& in = node(j);
  if (in.signed_act) {
    accumulate = in.q_written;
    in.q_written = true;
    return &in.d_q_out;
  }
  accumulate = in.written;
  in.written = true;
  return &in.grad;
}

bool GraphNetwork::passes_through(int add, int k) {
  const int j = node(add).d.input_index[size_t(k)];
  return j >= 0 && node(j).grad_from_add == add;
}

static void copy_or_add(Recording& rec, const Tensor& src, Tensor& dst, bool accumulate_into) {
  if (accumulate_into)
    accumulate(rec, Tensor::alias(src, dst.shape()), dst);
  else
    rec.copy(src.view(), dst.view(), "grad copy");
}

void GraphNetwork::backward(Recording& rec) {
  if (forward_only_)
    throw Error("model description " + desc_.source + ": backward of a network built for forward only "
                "(ModelConfig::forward_only: it has no gradient buffers)");
  for (auto& n : nodes_) n->written = n->tapped, n->q_written = false;
  nodes_.back()->written = true;  // d_logits
  auto in = [&](const Node& n, int k) -> const Tensor& {
    const int j = n.d.input_index[size_t(k)];
    return j < 0 ? input_ : consumed(j);
  };
  for (int i = int(nodes_.size()); i-- > 0;) {
    Node& n = node(i);
    const Tensor& x = in(n, 0);
    bool acc = false;
    if (n.signed_act) {  // its consumers are done: into the sum's gradient (the aux's added to)
      n.signed_act->backward(rec, n.out, n.d_q_out, n.grad, n.written);
      n.written = true;
    }
    switch (n.d.op) {
      case LayerOp::Conv: {
        Tensor* dx = grad_target(i, 0, acc);
        n.conv->backward(rec, x, n.grad, dx, acc);
        break;
      }
      case LayerOp::BatchNorm: {
        if (n.mode == Mode::Residual) break;  // at the add
        Tensor* dx = grad_target(i, 0, acc);
        if (n.mode == Mode::BnRelu) {
          n.bn->backward(rec, x, node(n.relu).out, node(n.relu).grad, *dx, /*relu=*/true, acc);
        } else if (n.mode == Mode::BnAct) {
          n.bn->backward_quantized(rec, x, *node(n.relu).act, n.out, node(n.relu).grad, n.grad, n.tapped, *dx, acc);
        } else {
          n.bn->backward(rec, x, n.out, n.grad, *dx, false, acc);
        }
        break;
      }
      case LayerOp::Relu:
      case LayerOp::Relu6: {
        if (n.mode == Mode::Skip) break;
        Tensor* dx = grad_target(i, 0, acc);
        if (n.act)
          n.act->backward(rec, x, n.grad, *dx, acc);
        else if (n.d.op == LayerOp::Relu)
          relu_backward(rec, n.out, n.grad, *dx, acc);
        else
          relu6_backward(rec, x, n.grad, *dx, acc);
        break;
      }
      case LayerOp::Add: {
        if (n.mode == Mode::Residual) {
          Node& b = node(n.bn_node);
          Node& r = node(n.relu);
          bool acc_b = false;
          Tensor* dbx = grad_target(n.bn_node, 0, acc_b);
          const Tensor& bx = in(b, 0);
          if (r.act)  // also leaves the sum's gradient in n.grad, for the shortcut
            b.bn->backward_quantized(rec, bx, *r.act, n.out, r.grad, n.grad, n.tapped, *dbx, acc_b, /*write_d_pre=*/true);
          else if (!n.tapped)
            b.bn->backward(rec, bx, r.out, r.grad, *dbx, /*relu=*/true, acc_b, &n.grad);
          else {
            relu_backward(rec, r.out, r.grad, n.grad, /*accumulate=*/true);
            b.bn->backward(rec, bx, n.out, n.grad, *dbx, false, acc_b);
          }
          if (n.drop_input == n.shortcut) break;
          if (Tensor* ds = grad_target(i, n.shortcut, acc))
            if (!passes_through(i, n.shortcut)) copy_or_add(rec, n.grad, *ds, acc);
          break;
        }
        bool acc0 = false, acc1 = false;
        Tensor* d0 = n.drop_input == 0 ? nullptr : grad_target(i, 0, acc0);
        Tensor* d1 = n.drop_input == 1 ? nullptr : grad_target(i, 1, acc1);
        if (d0 && passes_through(i, 0)) d0 = nullptr;  // its gradient buffer is this add's
        if (d1 && passes_through(i, 1)) d1 = nullptr;
        if (d0 && d1 && d0 != d1) {
          add_backward(rec, n.grad, *d0, acc0, *d1, acc1);
        } else {
          if (d0) copy_or_add(rec, n.grad, *d0, acc0);
          if (d1) copy_or_add(rec, n.grad, *d1, acc1);
        }
        break;
      }
      case LayerOp::MaxPool: {
        Tensor* dx = grad_target(i, 0, acc);
        if (is_2x2(n.pool))
          maxpool2x2_backward(rec, x, n.grad, *dx, acc);
        else
          maxpool2d_backward(rec, n.pool, x, n.grad, *dx, acc);
        break;
      }
      case LayerOp::GlobalAvgPool: {
        Tensor* dx = grad_target(i, 0, acc);
        global_avg_pool_backward(rec, n.grad, *dx, acc);
        break;
      }
      case LayerOp::Flatten: {
        Tensor* dx = grad_target(i, 0, acc);
        copy_or_add(rec, n.grad, *dx, acc);
        break;
      }
      case LayerOp::Linear: {
        if (n.act) {
          n.linear->backward(rec, n.q_in, n.grad, &n.d_q_in, false);
          Tensor* dx = grad_target(i, 0, acc);
          n.act->backward(rec, x, n.d_q_in, *dx, acc);
        } else {
          Tensor* dx = grad_target(i, 0, acc);
          n.linear->backward(rec, x, n.grad, dx, acc);
        }
        break;
      }
      case LayerOp::Dropout: {  // the forward's mask: the same step counter value
        Tensor* dx = grad_target(i, 0, acc);
        dropout_backward(rec, n.dropout, dropout_step_, n.grad, *dx, acc);
        break;
      }
    }
  }
}

}  // namespace vkqat::nn

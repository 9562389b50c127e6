// GraphNetwork's activation and gradient buffers (issue 18): which exist for the kernels
// plan() chose, and, with reuse, their places in one pool where buffers whose lifetimes do
// not overlap share memory (graph_memory.h).
//
// One timeline for a step of a net of L layers:
//   0 .. L-1    forward, layer i at step i. The training and the evaluation forward use
//               partly different buffers (a residual batchnorm writes its own output only in
//               evaluation): a buffer used by either is taken as used at that step (a
//               forward-only net runs evaluation forwards only);
//   L           the aux module (trainer: net forward, aux forward, losses, aux backward, net
//               backward): its forward and its backward read the taps' values, its backward
//               overwrites the taps' gradients;
//   L+1 .. 2L   backward, layer i at step 2L - i;
//   2L+1        after the step (forward only: L): what is read from outside once it ran.
// A buffer lives from its first use to its last: within one recording every buffer is written
// before it is read (first gradient writers overwrite, the aux module writes the taps' first),
// and nothing in it is needed by the next step, so the hull of its uses is its lifetime.
//
// Every reader found, by buffer (the uses below mirror forward() and backward()):
// - a layer's forward reads its inputs' consumed values (out, or q_out after a signed
//   quantizer); a residual add's training pass reads its batchnorm's input and the shortcut
//   and writes the sum / relu output; evaluation's add reads the batchnorm's own output;
// - backward: conv (backward-weight) its input; batchnorm its input and output, fused with a
//   relu the relu's output and gradient, with an activation quantizer BN's output (pre);
//   relu its output, relu6 and activation quantizers their input; max pool its input; the
//   last linear its input and quantized input; a residual add its batchnorm's input, the
//   relu's output and gradient and the sum; a signed quantizer the value before it. Add,
//   global average pool, flatten and dropout read gradients only (dropout's mask comes
//   from its step counter);
// - gradients: written by the consumers' backward (a batchnorm computed in its add's pass
//   writes at the add's step), read by the node's own (a relu fused into the batchnorm or add
//   before it: at that node's); an add's gradient also by the inputs that alias it;
// - the aux module: the taps' values and gradients (step L);
// - after the step: the statistics collector (quant/stats.cpp: `vkqat train --stats-every`,
//   vkqat-viz) reads every activation site's input quant_sites() lists (relu / quantizer
//   inputs, signed quantizers' inputs, the classifier's input): those live to the end, i.e.
//   are not reused in training nets (a forward-only net refuses statistics); logits stay
//   outside the pool (the loss, the evaluator's per-class counts, int_infer read them).
// A buffer these rules give no use is kept alive over the whole timeline.
#include <cstdint>
#include <limits>
#include <unordered_map>

#include "backend/error.h"
#include "nn/model/graph_network.h"
#include "nn/model/graph_network_node.h"

namespace vkqat::nn {

using graph_detail::batched;
using graph_detail::Mode;

std::vector<GraphNetwork::BufferSlot> GraphNetwork::buffer_slots() {
  std::vector<BufferSlot> slots;
  for (auto& np : nodes_) {
    Node& n = *np;
    if (n.classifier && n.act) {  // the last linear's quantized input
      const std::vector<int> in_shape{batch_, n.linear->in};
      slots.push_back({&n.q_in, in_shape});
      if (!forward_only_) slots.push_back({&n.d_q_in, in_shape});
    }
    if (n.last) continue;  // its output and gradient are logits() and d_logits()
    const std::vector<int> shape = batched(batch_, n.d.shape);
    const bool clip_in_bn = n.mode == Mode::BnAct && node(n.relu).act->uniform_clip() && !n.tapped;
    const bool no_out = (n.d.op == LayerOp::BatchNorm && n.mode == Mode::BnRelu) ||
                        (n.d.op == LayerOp::Add && n.mode == Mode::Residual && !node(n.relu).act && !n.tapped);
    const bool no_grad = n.d.op == LayerOp::BatchNorm &&
                         (n.mode == Mode::BnRelu || n.mode == Mode::Residual || clip_in_bn);
    if (!no_out) slots.push_back({&n.out, shape});
    if (n.signed_act) {
      slots.push_back({&n.q_out, shape});
      if (!forward_only_) slots.push_back({&n.d_q_out, shape});
    }
    if (!forward_only_ && !no_grad && n.grad_from_add < 0) slots.push_back({&n.grad, shape});
  }
  return slots;
}

void GraphNetwork::place_buffers() {
  // All placed again: a replan (quantizers, taps) changes which exist and how long they live.
  for (auto& np : nodes_) {
    Node& n = *np;
    for (Tensor* t : {&n.q_in, &n.d_q_in, &n.q_out, &n.d_q_out}) *t = Tensor();
    if (!n.last) n.out = Tensor(), n.grad = Tensor();
    n.grad_is_alias = false;
  }
  pool_ = Tensor();
  const std::vector<BufferSlot> slots = buffer_slots();
  if (reuse_) {
    const uint64_t align = std::max<uint64_t>(256, ctx_.info().min_storage_offset_alignment);
    const std::vector<BufferLifetime> life = buffer_lifetimes(slots);
    const MemoryPlan p = plan_memory(life, align);
    pool_lower_bound_ = peak_live_bytes(life, align);
    if (p.pool_bytes / 4 > uint64_t(std::numeric_limits<int>::max()))
      throw Error("model description " + desc_.source + ": the planned buffer pool (" +
                  std::to_string(p.pool_bytes >> 20) + " MiB at batch " + std::to_string(batch_) +
                  ") exceeds one tensor's 2^31 floats; use a smaller batch size");
    if (p.pool_bytes) pool_ = Tensor(ctx_, {int(p.pool_bytes / 4)});
    for (size_t k = 0; k < slots.size(); ++k)
      *slots[k].tensor = Tensor::alias(pool_, slots[k].shape, p.offsets[k]);
  } else {
    for (const BufferSlot& s : slots) *s.tensor = Tensor(ctx_, s.shape);
  }
  if (forward_only_) return;
  for (auto& np : nodes_) {  // after the adds' own buffers exist
    Node& n = *np;
    if (n.grad_from_add < 0) continue;
    n.grad = Tensor::alias(node(n.grad_from_add).grad, batched(batch_, n.d.shape));
    n.grad_is_alias = true;
  }
}

void GraphNetwork::cut_lifetimes_short_for_test() {
  cut_lifetimes_short_ = true;
  plan();
}

std::vector<BufferLifetime> GraphNetwork::buffer_lifetimes(const std::vector<BufferSlot>& slots) {
  const int n_layers = int(nodes_.size());
  const int aux_step = n_layers, end_step = forward_only_ ? n_layers : 2 * n_layers + 1;
  auto bwd = [&](int i) { return 2 * n_layers - i; };
  std::unordered_map<const Tensor*, size_t> index;
  for (size_t k = 0; k < slots.size(); ++k) index[slots[k].tensor] = k;
  std::unordered_map<const Tensor*, const Tensor*> aliased;  // a gradient that is its add's
  for (auto& np : nodes_)
    if (np->grad_from_add >= 0) aliased[&np->grad] = &node(np->grad_from_add).grad;
  std::vector<BufferLifetime> life(slots.size());
  std::vector<bool> seen(slots.size(), false);
  auto use = [&](const Tensor* t, int step) {
    if (auto a = aliased.find(t); a != aliased.end()) t = a->second;
    auto it = index.find(t);
    if (it == index.end()) return;  // not pooled: the image, logits, d_logits, an unused member
    BufferLifetime& l = life[it->second];
    if (!seen[it->second])
      l.first = l.last = step, seen[it->second] = true;
    else
      l.first = std::min(l.first, step), l.last = std::max(l.last, step);
  };
  // What input k of node i reads (null: the image), and the gradient buffers it writes.
  auto input = [&](int i, int k) -> const Tensor* {
    const int j = node(i).d.input_index[size_t(k)];
    return j < 0 ? nullptr : &consumed(j);
  };
  auto input_grad = [&](int i, int k, int step) {
    const int j = node(i).d.input_index[size_t(k)];
    if (j >= 0) use(&node(j).grad, step), use(&node(j).d_q_out, step);
  };

  for (int i = 0; i < n_layers; ++i) {  // forward (training and evaluation)
    Node& n = node(i);
    for (size_t k = 0; k < n.d.input_index.size(); ++k) use(input(i, int(k)), i);
    for (const Tensor* t : {&n.out, &n.q_out, &n.q_in}) use(t, i);
    if (n.d.op == LayerOp::BatchNorm && (n.mode == Mode::BnRelu || n.mode == Mode::BnAct)) use(&node(n.relu).out, i);
    if (n.d.op == LayerOp::Add && n.mode == Mode::Residual) {
      if (!forward_only_) use(input(n.bn_node, 0), i);  // training: the batchnorm's pass runs here
      use(&node(n.bn_node).out, i);
      use(&node(n.relu).out, i);
    }
  }
  for (int i = 0; i < n_layers; ++i)
    if (node(i).tapped) use(&node(i).out, aux_step), use(&node(i).grad, aux_step);

  if (!forward_only_) {
    for (int i = 0; i < n_layers; ++i) {  // backward
      Node& n = node(i);
      const int s = bwd(i);
      if (n.signed_act) use(&n.out, s), use(&n.d_q_out, s), use(&n.grad, s);
      const bool skipped = n.mode == Mode::Skip || (n.d.op == LayerOp::BatchNorm && n.mode == Mode::Residual);
      if (skipped) continue;  // done in the pass of the node before
      use(&n.grad, s);
      switch (n.d.op) {
        case LayerOp::Conv:
        case LayerOp::MaxPool:
          use(input(i, 0), s);
          break;
        case LayerOp::BatchNorm:
        case LayerOp::Relu:
        case LayerOp::Relu6:
          use(input(i, 0), s);
          use(&n.out, s);
          if (n.relu >= 0) use(&node(n.relu).out, s), use(&node(n.relu).grad, s);
          break;
        case LayerOp::Linear:
          use(input(i, 0), s);
          use(&n.q_in, s), use(&n.d_q_in, s);
          break;
        case LayerOp::Add:
          if (n.mode == Mode::Residual) {
            use(input(n.bn_node, 0), s);
            input_grad(n.bn_node, 0, s);
            use(&n.out, s);
            use(&node(n.relu).out, s), use(&node(n.relu).grad, s);
          }
          break;
        default:  // global average pool, flatten, dropout: gradients only
          break;
      }
      for (size_t k = 0; k < n.d.input_index.size(); ++k) input_grad(i, int(k), s);
    }
    // The statistics collector's sites (quant_sites()), read after the step.
    for (int i = 0; i < n_layers; ++i) {
      Node& n = node(i);
      const int j = n.d.input_index[0];
      if (n.signed_act) use(&n.out, end_step);
      if (j >= 0 && (n.d.op == LayerOp::Relu || n.d.op == LayerOp::Relu6 || n.classifier)) use(&node(j).out, end_step);
    }
  }
  for (size_t k = 0; k < slots.size(); ++k) {
    int64_t numel = 1;
    for (int d : slots[k].shape) numel *= d;
    life[k].bytes = uint64_t(numel) * 4;
    if (!seen[k]) life[k].first = 0, life[k].last = end_step;  // no use modelled: never shared
    if (cut_lifetimes_short_) life[k].last = life[k].first;
  }
  return life;
}

}  // namespace vkqat::nn

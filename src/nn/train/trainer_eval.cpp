// Test-set evaluation: the Evaluator (replayed per test batch) and `vkqat eval`.
#include <algorithm>
#include <cstring>

#include "backend/error.h"
#include "nn/ops/cross_entropy.h"
#include "nn/model/model_builders.h"
#include "nn/train/checkpoint.h"
#include "nn/train/trainer_internal.h"

namespace vkqat::nn {

Evaluator::Evaluator(Context& ctx, Network& net, const Dataset& data, uint64_t seed, AuxiliaryHead* aux)
    : host_x_(ctx, net.input().shape(), DType::F32, MemoryKind::Host),
      host_y_(ctx, {net.batch()}, DType::U32, MemoryKind::Host),
      labels_(ctx, {net.batch()}, DType::U32),
      loss_sum_(ctx, {1}, DType::F32, MemoryKind::Host),
      correct_(ctx, {1}, DType::U32, MemoryKind::Host),
      aux_loss_sum_(ctx, {1}, DType::F32, MemoryKind::Host),
      aux_correct_(ctx, {1}, DType::U32, MemoryKind::Host),
      host_logits_(ctx, net.logits().shape(), DType::F32, MemoryKind::Host),
      loader_(data, net.batch(), false, seed),
      rec_(ctx),
      has_aux_(aux != nullptr) {
  const auto& in = net.input().shape();  // [batch, channels, height, width]
  if (data.channels != in[1] || data.height != in[2] || data.width != in[3])
    throw Error("the " + data.name + " test images are " + std::to_string(data.channels) + "x" +
                std::to_string(data.height) + "x" + std::to_string(data.width) + ", the network takes " +
                std::to_string(in[1]) + "x" + std::to_string(in[2]) + "x" + std::to_string(in[3]));
  rec_.copy(host_x_.view(), net.input().view(), "upload batch");
  rec_.copy(host_y_.view(), labels_.view(), "upload labels");
  net.forward(rec_, /*train=*/false);
  cross_entropy(rec_, net.logits(), labels_, loss_sum_, correct_, nullptr, 1.f, /*accumulate=*/true);
  rec_.copy(net.logits().view(), host_logits_.view(), "download logits");  // per-class accuracy
  if (aux) {
    aux->forward(rec_, /*train=*/false);
    cross_entropy(rec_, aux->logits(), labels_, aux_loss_sum_, aux_correct_, nullptr, 1.f, /*accumulate=*/true);
  }
  rec_.finish();
}
EvalResult Evaluator::run() {
  float* loss = static_cast<float*>(loss_sum_.view().mapped);
  uint32_t* correct = static_cast<uint32_t*>(correct_.view().mapped);
  float* aux_loss = static_cast<float*>(aux_loss_sum_.view().mapped);
  uint32_t* aux_correct = static_cast<uint32_t*>(aux_correct_.view().mapped);
  *loss = *aux_loss = 0.f, *correct = *aux_correct = 0;
  loader_.start_epoch(0);
  Batch b;
  EvalResult r;
  const int k = host_logits_.dim(1);
  r.class_correct.assign(size_t(k), 0), r.class_total.assign(size_t(k), 0);
  const float* logits = static_cast<const float*>(host_logits_.view().mapped);
  while (loader_.next(b)) {
    fill_host_batch(host_x_, host_y_, b);
    rec_.run();
    r.images += b.size;
    for (int i = 0; i < b.size; ++i) {
      const float* row = logits + size_t(i) * k;
      const uint32_t y = b.y[size_t(i)];
      if (y >= uint32_t(k)) continue;
      r.class_total[y]++;
      r.class_correct[y] += int(std::max_element(row, row + k) - row) == int(y);
    }
  }
  r.loss = *loss / std::max(1, r.images);
  r.acc = double(*correct) / std::max(1, r.images);
  r.has_aux = has_aux_;
  r.aux_loss = *aux_loss / std::max(1, r.images);
  r.aux_acc = double(*aux_correct) / std::max(1, r.images);
  return r;
}

void fill_host_batch(Tensor& host_x, Tensor& host_y, const Batch& b) {
  float* x = static_cast<float*>(host_x.view().mapped);
  uint32_t* y = static_cast<uint32_t*>(host_y.view().mapped);
  const size_t per_image = size_t(host_x.numel()) / host_x.dim(0);
  // A batch of other-sized images would write past the staging buffer.
  if (b.x.size() != size_t(b.size) * per_image || b.y.size() != size_t(b.size) || b.size > host_x.dim(0))
    throw Error("batch of " + std::to_string(b.size) + " images does not fit the network's input " +
                host_x.shape_str());
  std::memcpy(x, b.x.data(), b.x.size() * sizeof(float));
  std::memcpy(y, b.y.data(), b.y.size() * sizeof(uint32_t));
  for (int i = b.size; i < host_x.dim(0); ++i) {  // pad a partial batch; its rows are ignored
    std::memset(x + size_t(i) * per_image, 0, per_image * sizeof(float));
    y[i] = kIgnoreLabel;
  }
}

void take_shard(const Batch& global, int rank, int world, Batch& out) {
  if (world == 1) {
    out = global;
    return;
  }
  if (global.size % world != 0)
    throw Error("a batch of " + std::to_string(global.size) + " images does not divide among " + std::to_string(world) +
                " ranks");
  const size_t n = size_t(global.size / world), first = size_t(rank) * n;
  const size_t per_image = global.size ? global.x.size() / size_t(global.size) : 0;
  out.size = int(n);
  out.x.assign(global.x.begin() + long(first * per_image), global.x.begin() + long((first + n) * per_image));
  out.y.assign(global.y.begin() + long(first), global.y.begin() + long(first + n));
  if (global.index.size() == size_t(global.size))
    out.index.assign(global.index.begin() + long(first), global.index.begin() + long(first + n));
  else
    out.index.clear();
}

EvalResult Trainer::evaluate() { return impl_->evaluator->run(); }


// ---- vkqat eval ----------------------------------------------------------------------
EvalResult evaluate_checkpoint(Context& ctx, const EvalRequest& req, ModelConfig* used, const QuantPlugins& plugins) {
  SafeTensors st = read_safetensors(req.checkpoint);
  nlohmann::json meta = checkpoint_metadata(st);
  // Folder and cache data are transformed as in training (the checkpoint's data options).
  DataOptions data_opt;
  if (!meta.is_null() && meta.contains("data_options")) data_opt = DataOptions::from_json(meta["data_options"]);
  data_opt.val_split = req.data == "folder" ? data_opt.val_split : 0;
  if (req.data != "folder" && req.data != "cache") {  // only the normalization carries over
    DataOptions keep;
    keep.mean = data_opt.mean, keep.std = data_opt.std;
    data_opt = keep;
  }
  if (req.workers > 0) data_opt.workers = req.workers;
  Dataset test = load_test_split(req.data, req.data_dir, data_opt);
  if (req.limit > 0) test = first_n(test, req.limit);
  if (!meta.is_null() && meta.contains("classes") && !test.class_names.empty() &&
      meta["classes"].get<std::vector<std::string>>() != test.class_names)
    throw Error(req.checkpoint + " was trained on other classes than " + req.data_dir + " holds (see its metadata)");
  ModelConfig mc;
  if (!meta.is_null() && meta.contains("model")) {
    mc = ModelConfig::from_json(meta["model"]);
  } else if (req.model.empty()) {
    throw Error(req.checkpoint + " has no vkqat metadata (a PyTorch state_dict?): pass --model and --width");
  }
  if (!req.model.empty()) mc.name = req.model;
  bool from_shapes = false;
  if (meta.is_null() && is_torchvision_model(mc.name)) {
    // A PyTorch state_dict: channels, classes and the width come from its tensors' shapes.
    mc.height = test.height, mc.width_px = test.width;
    if (!req.stem.empty()) mc.stem = req.stem;
    if (req.width_mult > 0) mc.width_mult = req.width_mult;
    mc = config_from_state_shapes(mc, st);
    from_shapes = true;
  }
  if (req.width > 0) mc.width = req.width;
  if (mc.in_channels != test.channels || mc.height != test.height || mc.width_px != test.width ||
      mc.classes != test.classes) {
    if (from_shapes)
      throw Error(req.checkpoint + ": its tensors' shapes give a " + mc.name + " for " + std::to_string(mc.in_channels) +
                  "-channel images and " + std::to_string(mc.classes) + " classes; --data " + req.data + " has " +
                  std::to_string(test.channels) + " channels and " + std::to_string(test.classes) + " classes");
    if (!meta.is_null())
      throw Error(req.checkpoint + " was trained on " + std::to_string(mc.in_channels) + "x" + std::to_string(mc.height) +
                  "x" + std::to_string(mc.width_px) + " images with " + std::to_string(mc.classes) + " classes; --data " +
                  req.data + " has " + std::to_string(test.channels) + "x" + std::to_string(test.height) + "x" +
                  std::to_string(test.width) + " with " + std::to_string(test.classes));
    mc.in_channels = test.channels, mc.height = test.height, mc.width_px = test.width, mc.classes = test.classes;
  }
  mc.forward_only = true;  // evaluation only: no gradient buffers, activations reused
  auto net = build_network(ctx, mc, std::min(req.batch, std::max(1, test.n)));
  const nlohmann::json quant = meta.is_null() ? nlohmann::json() : meta.value("quant", nlohmann::json());
  if (!quant.is_null()) {
    if (!plugins.policy) throw Error(req.checkpoint + " is quantized: evaluating it needs the quantization module");
    net->apply_quant_policy(*plugins.policy(quant));
  }
  load_network_state(*net, st, {"aux."});
  // The auxiliary head is evaluated too when the checkpoint carries it.
  std::unique_ptr<AuxiliaryHead> aux;
  if (!meta.is_null() && meta.value("aux", false) && plugins.aux && st.has("aux.fc.weight")) {
    aux = plugins.aux(ctx, *net);
    if (load_named_tensors(aux->state(), st) != int(aux->state().size()))
      throw Error(req.checkpoint + ": incomplete aux.* tensors");
  }
  if (used) *used = mc;
  Evaluator ev(ctx, *net, test, 0, aux.get());
  return ev.run();
}

}  // namespace vkqat::nn

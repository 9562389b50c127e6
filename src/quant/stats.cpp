#include "quant/stats.h"

#include <algorithm>
#include <cmath>
#include <regex>

#include "backend/error.h"
#include "backend/kernel.h"
#include "nn/model/network.h"
#include "nn/ops/reduce.h"
#include "quant/common.h"
#include "quant/dorefa.h"

namespace vkqat::quant {
using nn::DType;
using nn::Tensor;

namespace {
struct ClipPush {
  uint32_t n4, n, invocations;
};
struct LogitPush {
  uint32_t rows, classes;
};
constexpr uint32_t kLocal = 64;

Tensor host_f32(Context& ctx, int n) { return Tensor(ctx, {n}, DType::F32, MemoryKind::Host); }
Tensor host_u32(Context& ctx, int n) { return Tensor(ctx, {n}, DType::U32, MemoryKind::Host); }
}  // namespace

std::vector<float> WeightStats::level_centres() const {
  if (bits < 2 || bits > 8) return {};
  const int n = (1 << bits) - 1;
  const double m = std::tanh(double(max_abs));
  std::vector<float> out(size_t(n) + 1);
  for (int k = 0; k <= n; ++k) {
    const double t = std::clamp((2.0 * k / n - 1.0) * m, -0.999999, 0.999999);
    out[size_t(k)] = float(std::atanh(t));
  }
  return out;
}

// ---- the two shaders ---------------------------------------------------------------
void record_clip_counts(Recording& rec, const Tensor& x, const Tensor& threshold, Tensor& counts) {
  if (!x.defined() || x.dtype() != DType::F32) throw Error("clip_counts: x must be a defined F32 tensor");
  if (!threshold.defined() || threshold.dtype() != DType::F32 || threshold.numel() < 1)
    throw Error("clip_counts: threshold must be an F32 tensor of >= 1 element");
  if (!counts.defined() || counts.dtype() != DType::U32 || counts.numel() != 2)
    throw Error("clip_counts: counts " + counts.shape_str() + " must be U32 [2]");
  if (x.numel() >= (int64_t(1) << 31)) throw Error("clip_counts: x " + x.shape_str() + " too large");
  Context& ctx = rec.context();
  const uint64_t n4 = uint64_t(x.numel()) / 4;
  const uint64_t groups = std::clamp<uint64_t>((n4 + kLocal * 256 - 1) / (kLocal * 256), 1, ctx.info().is_cpu() ? 64 : 1024);
  ClipPush push{uint32_t(n4), uint32_t(x.numel()), uint32_t(groups * kLocal)};
  rec.dispatch(ctx.kernel("stats_clip", {kLocal, 1, 1}), {x.view(), x.view(), threshold.view(), counts.view()}, push,
               Groups{uint32_t(groups), 1, 1}, "stats clip");
}

void record_logit_stats(Recording& rec, const Tensor& logits, Tensor& out) {
  if (!logits.defined() || logits.rank() != 2 || logits.dtype() != DType::F32)
    throw Error("logit_stats: logits " + logits.shape_str() + " must be F32 [rows, classes]");
  if (!out.defined() || out.dtype() != DType::F32 || out.numel() != int64_t(logits.dim(0)) * 2)
    throw Error("logit_stats: out " + out.shape_str() + " must be F32 with 2 values per row of " + logits.shape_str());
  const Kernel& k = rec.context().kernel("stats_logits", {kLocal, 1, 1});
  LogitPush push{uint32_t(logits.dim(0)), uint32_t(logits.dim(1))};
  rec.dispatch_1d(k, {logits.view(), out.view()}, push, push.rows, "stats logits");
}

namespace ref {
std::vector<uint32_t> clip_counts(const std::vector<float>& x, float threshold) {
  std::vector<uint32_t> c(2, 0);
  for (float v : x) c[0] += v >= threshold, c[1] += v < 0.f;
  return c;
}

std::vector<double> logit_stats(const std::vector<float>& logits, int rows, int classes) {
  std::vector<double> out(size_t(rows) * 2);
  for (int r = 0; r < rows; ++r) {
    const float* l = logits.data() + size_t(r) * classes;
    double m = *std::max_element(l, l + classes), s = 0;
    for (int c = 0; c < classes; ++c) s += std::exp(double(l[c]) - m);
    out[2 * size_t(r)] = m, out[2 * size_t(r) + 1] = 1 / s;
  }
  return out;
}
}  // namespace ref

// ---- the collector -----------------------------------------------------------------
struct StatsCollector::Impl {
  struct Weight {
    std::string name, quantizer;
    int bits = 32;
    const Tensor* w = nullptr;
    Tensor q, stat, occupancy, hist;  // q, stat, occupancy: DoReFa levels only
  };
  struct Act {
    std::string name, quantizer;
    const Tensor* x = nullptr;
    const Tensor* alpha = nullptr;
    Tensor clip, hist;
  };
  Context& ctx;
  nn::Network& net;
  std::vector<Weight> weights;
  std::vector<Act> acts;
  Tensor scratch, weight_stats, act_max_abs, alphas, no_alpha, last_stats, logit_rows;
  const nn::LinearLayer* fc = nullptr;
  const Tensor* fc_plain = nullptr;
  bool fc_sat = false;
  std::unique_ptr<Recording> pass1;
  Impl(Context& c, nn::Network& n) : ctx(c), net(n) {}
};

StatsCollector::StatsCollector(Context& ctx, nn::Network& net) : impl_(std::make_unique<Impl>(ctx, net)) {
  Impl& s = *impl_;
  auto add_weight = [&](const nn::WeightSite& site) {
    Impl::Weight e;
    e.name = site.name, e.w = site.weight;
    const nn::WeightQuantizer* q = site.quant;
    e.quantizer = q ? q->describe() : "fp32";
    // Level occupancy is computed for DoReFa's level grid (bits 2..8).
    if (q && q->kind().method == "dorefa" && q->kind().bits >= 2 && q->kind().bits <= 8) e.bits = q->kind().bits;
    s.weights.push_back(std::move(e));
  };
  auto add_act = [&](const nn::ActSite& site) {
    if (!site.input->defined()) return;  // the ReLU is fused into BN: no separate pre-activation
    Impl::Act a;
    a.name = site.name, a.x = site.input;
    nn::ActQuantizer* q = site.quant;
    a.quantizer = q ? q->describe() : "relu";
    if (q)
      for (nn::Parameter* p : q->parameters())
        if (p->name.size() > 6 && p->name.compare(p->name.size() - 6, 6, ".alpha") == 0) a.alpha = &p->value;
    s.acts.push_back(std::move(a));
  };
  // Every model lists its sites the same way: no model class is known here.
  // A forward-only net reuses the sites' buffers once its forward read them.
  if (net.config().forward_only)
    throw Error("statistics: model " + net.config().name + " was built for forward only (evaluation)");
  const nn::QuantSites sites = net.quant_sites();
  if (!sites.classifier) throw Error("statistics: model " + net.config().name + " names no last FC layer");
  for (const nn::WeightSite& w : sites.weights) add_weight(w);
  if (std::none_of(sites.weights.begin(), sites.weights.end(),
                   [&](const nn::WeightSite& w) { return w.weight == &sites.classifier->weight.value; }))
    throw Error("statistics: model " + net.config().name + " does not list its last FC among its weights");
  for (const nn::ActSite& a : sites.acts) add_act(a);
  s.fc = sites.classifier;
  s.fc_sat = s.fc->quant && s.fc->quant->kind().sat;

  int64_t scratch_numel = 1;
  for (const auto& w : s.weights) scratch_numel = std::max(scratch_numel, quant_scratch_numel(ctx, w.w->shape(), ReduceScope::Tensor));
  for (const auto& a : s.acts) scratch_numel = std::max(scratch_numel, quant_scratch_numel(ctx, a.x->shape(), ReduceScope::Tensor));
  s.scratch = Tensor(ctx, {int(scratch_numel)});
  s.weight_stats = host_f32(ctx, 3 * int(s.weights.size()));
  s.act_max_abs = host_f32(ctx, std::max<int>(1, int(s.acts.size())));
  s.alphas = host_f32(ctx, std::max<int>(1, int(s.acts.size())));
  s.no_alpha = Tensor(ctx, {1});
  s.no_alpha.upload({std::numeric_limits<float>::infinity()});
  s.last_stats = host_f32(ctx, 3);
  s.logit_rows = host_f32(ctx, 2 * net.batch());

  // Pass 1, recorded once: everything whose range is known in advance.
  s.pass1 = std::make_unique<Recording>(ctx);
  Recording& rec = *s.pass1;
  for (size_t i = 0; i < s.weights.size(); ++i) {
    Impl::Weight& w = s.weights[i];
    nn::ReduceOptions mv;
    mv.out_index = uint32_t(3 * i), mv.var_index = uint32_t(3 * i + 1);
    nn::reduce_mean_var(rec, *w.w, s.weight_stats, s.weight_stats, s.scratch, mv);
    nn::ReduceOptions ma;
    ma.out_index = uint32_t(3 * i + 2);
    nn::reduce_max_abs(rec, *w.w, s.weight_stats, s.scratch, ma);
    if (w.bits == 32) continue;
    // Q(w) exactly as the DoReFa quantizer computes it; its values are 2k/n - 1, so a
    // histogram with one bin per level centred on it counts each level exactly.
    const int n = (1 << w.bits) - 1;
    w.q = Tensor(ctx, w.w->shape());
    w.stat = Tensor(ctx, {1});
    w.occupancy = host_u32(ctx, n + 1 + 2);
    dorefa_weight_forward(rec, *w.w, w.q, w.stat, s.scratch, w.bits);
    nn::histogram(rec, w.q, w.occupancy, -1.f - 1.f / n, 1.f + 1.f / n);
  }
  const Impl::Weight& fcw = *std::find_if(s.weights.begin(), s.weights.end(),
                                          [&](const Impl::Weight& w) { return w.w == &s.fc->weight.value; });
  s.fc_plain = fcw.bits != 32 ? &fcw.q : (s.fc->quant && !s.fc_sat ? &s.fc->wq : &s.fc->weight.value);
  nn::ReduceOptions mv;
  mv.out_index = 0, mv.var_index = 1;
  nn::reduce_mean_var(rec, *s.fc_plain, s.last_stats, s.last_stats, s.scratch, mv);
  nn::ReduceOptions ve;
  ve.out_index = 2;
  nn::reduce_var(rec, s.fc->effective_weight(), s.last_stats, s.scratch, ve);
  for (size_t i = 0; i < s.acts.size(); ++i) {
    Impl::Act& a = s.acts[i];
    nn::ReduceOptions ma;
    ma.out_index = uint32_t(i);
    nn::reduce_max_abs(rec, *a.x, s.act_max_abs, s.scratch, ma);
    a.clip = host_u32(ctx, 2);
    rec.fill(a.clip.view(), 0, "stats clip zero");
    record_clip_counts(rec, *a.x, a.alpha ? *a.alpha : s.no_alpha, a.clip);
    rec.copy((a.alpha ? *a.alpha : s.no_alpha).view().sub(0, 4), s.alphas.view().sub(4 * i, 4), "stats alpha");
  }
  record_logit_stats(rec, net.logits(), s.logit_rows);
  rec.finish();
}

StatsCollector::~StatsCollector() = default;

StatsSnapshot StatsCollector::collect() {
  Impl& s = *impl_;
  s.pass1->run();
  const std::vector<float> ws = s.weight_stats.download(), amax = s.act_max_abs.download(), alpha = s.alphas.download(),
                           last = s.last_stats.download(), rows = s.logit_rows.download();
  StatsSnapshot snap;
  Recording pass2(s.ctx);  // histograms over ranges pass 1 found
  for (size_t i = 0; i < s.weights.size(); ++i) {
    Impl::Weight& w = s.weights[i];
    WeightStats out;
    out.name = w.name, out.quantizer = w.quantizer, out.bits = w.bits, out.numel = w.w->numel();
    out.mean = ws[3 * i], out.var = ws[3 * i + 1], out.max_abs = ws[3 * i + 2];
    if (w.bits != 32) {
      out.occupancy = w.occupancy.download_u32();
      out.occupancy.resize(out.occupancy.size() - 2);  // no value lies outside [-1, 1]
    }
    if (!w.hist.defined()) w.hist = host_u32(s.ctx, kStatsBins + 2);
    const float m = out.max_abs > 0 && std::isfinite(out.max_abs) ? out.max_abs : 1.f;
    nn::histogram(pass2, *w.w, w.hist, -m, m);
    snap.weights.push_back(std::move(out));
  }
  for (size_t i = 0; i < s.acts.size(); ++i) {
    Impl::Act& a = s.acts[i];
    ActStats out;
    out.name = a.name, out.quantizer = a.quantizer, out.numel = a.x->numel(), out.max_abs = amax[i];
    if (a.alpha) out.alpha = alpha[i];
    const std::vector<uint32_t> clip = a.clip.download_u32();
    out.above_alpha = a.alpha ? clip[0] : 0;
    out.below_zero = clip[1];
    float r = 1.05f * std::max(std::isfinite(out.max_abs) ? out.max_abs : 0.f, a.alpha ? out.alpha : 0.f);
    if (!(r > 0) || !std::isfinite(r)) r = 1.f;
    out.lo = -r, out.hi = r;
    if (!a.hist.defined()) a.hist = host_u32(s.ctx, kStatsBins + 2);
    nn::histogram(pass2, *a.x, a.hist, out.lo, out.hi);
    snap.acts.push_back(std::move(out));
  }
  pass2.finish();
  pass2.run();
  for (size_t i = 0; i < s.weights.size(); ++i) snap.weights[i].hist = s.weights[i].hist.download_u32();
  for (size_t i = 0; i < s.acts.size(); ++i) snap.acts[i].hist = s.acts[i].hist.download_u32();

  LastLayerStats& L = snap.last;
  L.n_out = s.fc->out, L.sat = s.fc_sat;
  const double mean = last[0], var = last[1], numel = double(s.fc_plain->numel());
  L.var_plain = var;
  L.norm_plain = std::sqrt(numel * (var + mean * mean));
  const double factor = var > 0 ? 1 / std::sqrt(L.n_out * var) : 1;  // SAT's rescale (constant: factor 1)
  L.var_sat = var * factor * factor;
  L.norm_sat = L.norm_plain * factor;
  L.n_var_effective = L.n_out * double(last[2]);
  const int batch = s.net.batch();
  for (int r = 0; r < batch; ++r) {
    L.mean_max_logit += rows[2 * size_t(r)] / batch;
    L.mean_max_prob += rows[2 * size_t(r) + 1] / batch;
    L.saturated_fraction += (rows[2 * size_t(r) + 1] > 0.99f) / double(batch);
  }
  return snap;
}

// ---- serialisation -------------------------------------------------------------------
nlohmann::json StatsSnapshot::to_json() const {
  nlohmann::json w = nlohmann::json::array(), a = nlohmann::json::array();
  for (const auto& x : weights)
    w.push_back({{"name", x.name}, {"q", x.quantizer}, {"bits", x.bits}, {"numel", x.numel}, {"mean", x.mean},
                 {"var", x.var}, {"max_abs", x.max_abs}, {"hist", x.hist}, {"occupancy", x.occupancy}});
  for (const auto& x : acts)
    a.push_back({{"name", x.name}, {"q", x.quantizer}, {"alpha", std::isnan(x.alpha) ? nlohmann::json() : nlohmann::json(x.alpha)},
                 {"numel", x.numel}, {"max_abs", x.max_abs}, {"lo", x.lo}, {"hi", x.hi}, {"hist", x.hist},
                 {"above_alpha", x.above_alpha}, {"below_zero", x.below_zero}});
  const StepScalars& c = scalars;
  return {{"step", step},
          {"epoch", epoch},
          {"scalars", {{"loss", c.loss}, {"acc", c.acc}, {"has_aux", c.has_aux}, {"aux_loss", c.aux_loss},
                       {"aux_acc", c.aux_acc}, {"lr", c.lr}, {"images_per_s", c.images_per_s}}},
          {"weights", w},
          {"acts", a},
          {"last", {{"n_out", last.n_out}, {"sat", last.sat}, {"var_plain", last.var_plain}, {"norm_plain", last.norm_plain},
                    {"var_sat", last.var_sat}, {"norm_sat", last.norm_sat}, {"n_var_effective", last.n_var_effective},
                    {"mean_max_logit", last.mean_max_logit}, {"mean_max_prob", last.mean_max_prob},
                    {"saturated_fraction", last.saturated_fraction}}}};
}

StatsSnapshot StatsSnapshot::from_json(const nlohmann::json& j) {
  StatsSnapshot s;
  try {
    s.step = j.at("step");
    s.epoch = j.at("epoch");
    const auto& c = j.at("scalars");
    StepScalars& sc = s.scalars;
    sc.loss = c.at("loss"), sc.acc = c.at("acc"), sc.aux_loss = c.at("aux_loss"), sc.aux_acc = c.at("aux_acc");
    sc.lr = c.at("lr"), sc.images_per_s = c.at("images_per_s"), sc.has_aux = c.at("has_aux");
    for (const auto& x : j.at("weights")) {
      WeightStats w;
      w.name = x.at("name"), w.quantizer = x.at("q"), w.bits = x.at("bits"), w.numel = x.at("numel");
      w.mean = x.at("mean"), w.var = x.at("var"), w.max_abs = x.at("max_abs");
      w.hist = x.at("hist").get<std::vector<uint32_t>>();
      w.occupancy = x.at("occupancy").get<std::vector<uint32_t>>();
      if (w.hist.size() != size_t(kStatsBins) + 2) throw Error("weight histogram of " + w.name + " has the wrong size");
      if (!w.occupancy.empty() && (w.bits < 2 || w.bits > 8 || w.occupancy.size() != size_t(1) << w.bits))
        throw Error("level occupancy of " + w.name + " does not match its bits");
      s.weights.push_back(std::move(w));
    }
    for (const auto& x : j.at("acts")) {
      ActStats a;
      a.name = x.at("name"), a.quantizer = x.at("q"), a.numel = x.at("numel"), a.max_abs = x.at("max_abs");
      if (!x.at("alpha").is_null()) a.alpha = x.at("alpha");
      a.lo = x.at("lo"), a.hi = x.at("hi");
      a.hist = x.at("hist").get<std::vector<uint32_t>>();
      a.above_alpha = x.at("above_alpha"), a.below_zero = x.at("below_zero");
      if (a.hist.size() != size_t(kStatsBins) + 2) throw Error("activation histogram of " + a.name + " has the wrong size");
      s.acts.push_back(std::move(a));
    }
    const auto& l = j.at("last");
    LastLayerStats& L = s.last;
    L.n_out = l.at("n_out"), L.sat = l.at("sat"), L.var_plain = l.at("var_plain"), L.norm_plain = l.at("norm_plain");
    L.var_sat = l.at("var_sat"), L.norm_sat = l.at("norm_sat"), L.n_var_effective = l.at("n_var_effective");
    L.mean_max_logit = l.at("mean_max_logit"), L.mean_max_prob = l.at("mean_max_prob");
    L.saturated_fraction = l.at("saturated_fraction");
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("statistics record: ") + e.what());
  }
  return s;
}

}  // namespace vkqat::quant

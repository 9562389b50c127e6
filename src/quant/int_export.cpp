#include "quant/int_export.h"

#include <cmath>

#include "backend/error.h"
#include "nn/model/model_builders.h"
#include "nn/safetensors.h"
#include "nn/train/checkpoint.h"
#include "quant/dorefa.h"
#include "quant/policy.h"
#include "quant/sat.h"

namespace vkqat::quant {
namespace {

constexpr double kBnEps = 1e-5;  // nn::BatchNorm2dLayer's eps

struct Exporter {
  enum class LayerRole { First, Middle };  // edge (--edge-bits) or middle (--wbits) weights
  const nn::SafeTensors& st;
  QuantConfig q;
  std::string file;

  [[noreturn]] void fail(const std::string& what) const { throw Error(file + ": " + what); }

  int bits_of(const std::string& name, const char* key, int fallback) const {
    if (q.bits_config.contains(name) && q.bits_config[name].contains(key)) return q.bits_config[name][key].get<int>();
    return fallback;
  }

  // Weight codes (DoReFa levels) of `name`.weight [rows, c_in, k, k] as [rows, k*k, c_in].
  std::vector<int> weight_codes(const std::string& name, int rows, int c_in, int k, int bits,
                                std::vector<double>* wq = nullptr) const {
    if (bits == 32) fail(name + " has full-precision weights: the integer model needs every layer quantized");
    if (bits < 2 || bits > 8) fail(name + " has " + std::to_string(bits) + "-bit weights (supported: 2..8)");
    std::vector<int64_t> shape{rows, c_in};
    if (k > 0) shape.push_back(k), shape.push_back(k);
    const std::vector<float> w = st.get_f32(name + ".weight", shape);
    const ref::Quantized qw = ref::dorefa_weight_forward(w, ref::dorefa_weight_stat(w, bits), bits);
    const int kk = k > 0 ? k * k : 1, n = (1 << bits) - 1;
    std::vector<int> codes(w.size());
    if (wq) wq->resize(w.size());
    for (int o = 0; o < rows; ++o)
      for (int c = 0; c < c_in; ++c)
        for (int t = 0; t < kk; ++t) {
          const size_t src = (size_t(o) * c_in + c) * kk + t;
          const int code = int(std::min<float>(std::max<float>(round_half_away(qw.r[src]), 0.f), float(n)));
          codes[(size_t(o) * kk + t) * c_in + c] = code;
          if (wq) (*wq)[src] = double(2 * code - n) / n;
        }
    return codes;
  }

  // 1 / sqrt(n Var[wq]) (1 for a constant tensor), as quant/sat.h.
  static double sat_factor(const std::vector<double>& wq, int64_t n) {
    double mean = 0, var = 0;
    for (double v : wq) mean += v;
    mean /= double(wq.size());
    for (double v : wq) var += (v - mean) * (v - mean);
    var /= double(wq.size());
    return var > 0 ? 1.0 / std::sqrt(double(n) * var) : 1.0;
  }

  // Per-channel BN fold: y = scale_c * conv + shift_c.
  void bn(const std::string& name, int c, std::vector<double>& scale, std::vector<double>& shift) const {
    const auto g = st.get_f32(name + ".weight", {c}), b = st.get_f32(name + ".bias", {c});
    const auto mu = st.get_f32(name + ".running_mean", {c}), var = st.get_f32(name + ".running_var", {c});
    scale.resize(size_t(c)), shift.resize(size_t(c));
    for (int i = 0; i < c; ++i) {
      scale[i] = double(g[i]) / std::sqrt(double(var[i]) + kBnEps);
      shift[i] = double(b[i]) - scale[i] * double(mu[i]);
    }
  }

  // Levels n above zero and clip level alpha of activation quantizer `name`; a signed
  // (symmetric PACT) one has n = 2^(k-1) - 1 per side (quant/pact.h).
  void act(const std::string& name, int& levels, double& alpha, bool is_signed = false) const {
    const int bits = bits_of(name, "abits", q.abits);
    if (bits == 32) fail(name + " is not quantized: the integer model needs every activation quantized");
    if (bits < 1 + int(is_signed) || bits > 8)
      fail(name + " has " + std::to_string(bits) + "-bit " + (is_signed ? "signed " : "") + "activations (supported: " +
           (is_signed ? "2" : "1") + "..8)");
    levels = is_signed ? (1 << (bits - 1)) - 1 : (1 << bits) - 1;
    alpha = q.aquant == "dorefa" ? 1.0 : std::max(double(st.get_f32(name + ".alpha", {1})[0]), double(kMinScale));
  }

  // Multiplier(s), shift and bias of v = acc m + extra m2 + b, in units of 2^-shift.
  void requant(int o, double m, double m2, double b, Requant& rq, const std::string& layer) const {
    const double big = std::max(std::fabs(m), std::fabs(m2));
    int shift = big > 0 ? 30 - int(std::ceil(std::log2(big))) : 40;
    if (b != 0) shift = std::min(shift, 60 - int(std::ceil(std::log2(std::fabs(b) + 1))));
    shift = std::min(shift, 62);
    if (shift < 1 || !std::isfinite(m) || !std::isfinite(m2) || !std::isfinite(b))
      fail(layer + ": channel " + std::to_string(o) + " has a requantization scale out of the integer range (m " +
           std::to_string(m) + ", bias " + std::to_string(b) + ")");
    const double f = std::ldexp(1.0, shift);
    rq.mult[o] = int32_t(std::llround(m * f));
    rq.mult2[o] = int32_t(std::llround(m2 * f));
    rq.shift[o] = shift;
    rq.bias[o] = std::llround(b * f);
  }

  static Requant sized(int c) {
    Requant r;
    r.mult.resize(size_t(c)), r.mult2.resize(size_t(c)), r.shift.resize(size_t(c)), r.bias.resize(size_t(c));
    return r;
  }
};

// What a description layer's output is, as far as the integer model is concerned.
struct Value {
  enum class Kind { Image, Codes, Conv, BnConv, Sum, Pooled } kind = Kind::Image;
  std::string node;  // Codes / Pooled: the integer layer whose codes these are
  double step = 0;   // Codes / Pooled: the value of one code
  int offset = 0;    // Codes: the codes' zero point (signed codes: levels per side)
  int layer = -1;    // the description layer that made it
  int conv = -1;     // Conv / BnConv: the conv layer (BnConv: `layer` is the batchnorm)
  int a = -1, b = -1;  // Sum: the add's inputs (description indices)
  int hw = 0;          // Pooled: pixels summed per channel
};

// A conv + BN as integer weights and the float affine of its accumulator: y = scale acc + shift.
struct Folded {
  IntNode node;
  std::vector<double> scale, shift;
};

// Walks a model description in order, emitting an integer layer wherever an activation
// quantizer (or max pool on codes, or the classifier) makes one, and refusing, naming the
// layer, what has no integer form.
struct GraphExport {
  Exporter& ex;
  const nn::ModelDescription& d;
  IntModel& m;
  std::vector<Value> vals;

  [[noreturn]] void refuse(int i, const std::string& why) const {
    const nn::LayerDesc& l = d.layers[size_t(i)];
    ex.fail("layer '" + l.name + "' (" + nn::layer_op_name(l.op) + ") has no integer form: " + why);
  }
  const Value& value(int j) const {
    static const Value image;
    return j < 0 ? image : vals[size_t(j)];
  }
  const std::string& lname(int j) const { return d.layers[size_t(j)].name; }
  std::string describe(const Value& v) const {
    using K = Value::Kind;
    switch (v.kind) {
      case K::Image: return "the image";
      case K::Codes: return std::string(v.offset ? "the signed codes of '" : "the codes of '") + v.node + "'";
      case K::Conv: return "the raw output of conv '" + lname(v.conv) + "' (no batchnorm and activation quantizer after it)";
      case K::BnConv: return "conv + batchnorm '" + lname(v.layer) + "' with no activation quantizer after it";
      case K::Sum:
        return "add '" + lname(v.layer) +
               "' with no activation quantizer after it (a linear bottleneck: training keeps that sum in float, so no "
               "integer model of what reads it is exact)";
      case K::Pooled: return "the global average pool '" + lname(v.layer) + "' (only the final linear may read it)";
    }
    return "?";
  }
  // Whether training quantized this batchnorm / add (a linear bottleneck) with a signed
  // quantizer, GraphNetwork's "LAYER.act" (not a relu of that name).
  bool signed_site(int i) const {
    const std::string q = lname(i) + ".act";
    return d.index_of(q) < 0 && ex.st.has(q + ".alpha");
  }
  void emit(int i, IntNode n) {
    if (m.index_of(n.name) >= 0) refuse(i, "'" + n.name + "' would feed two activation quantizers");
    m.nodes.push_back(std::move(n));
  }

  Folded fold(const Value& v) const {
    const nn::LayerDesc& cl = d.layers[size_t(v.conv)];
    const Value& in = value(cl.input_index[0]);
    const bool stem = in.kind == Value::Kind::Image;
    Folded f;
    IntNode& n = f.node;
    n.name = cl.name;
    n.op = IntOp::Conv;
    n.mode = stem ? IntConvMode::Stem : IntConvMode::Requant;
    n.inputs = {stem ? std::string("input") : in.node};
    IntConv& c = n.conv;
    c.name = cl.name;
    c.c_in = cl.input_index[0] < 0 ? d.in_channels : d.layers[size_t(cl.input_index[0])].shape[0];
    c.c_out = cl.out, c.k = cl.kernel, c.stride = cl.stride, c.pad = cl.padding, c.groups = cl.groups;
    if (c.groups != 1 && !c.depthwise())
      refuse(v.conv, "groups " + std::to_string(c.groups) + " (the integer kernels do dense and depthwise convs)");
    const auto role = stem ? Exporter::LayerRole::First : Exporter::LayerRole::Middle;
    c.wbits = ex.bits_of(c.name, "wbits", role == Exporter::LayerRole::Middle ? ex.q.wbits : ex.q.edge_bits);
    std::vector<double> wq;
    c.codes = pack_codes(ex.weight_codes(c.name, c.c_out, c.group_in(), c.k, c.wbits, &wq), c.c_out, c.k * c.k,
                         c.group_in(), c.wbits);
    // sat_conv rescales every conv's weight (quant/policy.h), folded into the multiplier.
    const double sat = ex.q.sat_conv ? Exporter::sat_factor(wq, sat_conv_fan_out({c.c_out, c.group_in(), c.k, c.k})) : 1.0;
    ex.bn(lname(v.layer), c.c_out, f.scale, f.shift);
    for (double& s : f.scale) s *= sat / c.wlevels() * (stem ? 1.0 : in.step);
    return f;
  }

  // A quantized activation on `v`, quantizer `qname`: a relu / relu6 replaced by its
  // quantizer, or the signed quantizer of a linear bottleneck (codes offset by its levels per
  // side n, 2n + 1 of them). The conv(s) that make v, requantized to its codes.
  Value activation(int i, const Value& v, const std::string& qname, bool is_signed) {
    using K = Value::Kind;
    if (v.kind != K::BnConv && v.kind != K::Sum) refuse(i, "it reads " + describe(v));
    int levels;
    double alpha;
    ex.act(qname, levels, alpha, is_signed);
    const double q = levels / alpha;
    Value out;
    out.kind = K::Codes, out.layer = i, out.step = alpha / levels, out.offset = is_signed ? levels : 0;
    // Signed: code = clamp(round(v q) + n, 0, 2n): the offset n joins the bias, the clamp is
    // symmetric PACT's clip.
    auto offset_codes = [&](IntNode& node) { node.offset = out.offset, node.conv.levels = levels + out.offset; };
    if (v.kind == K::BnConv) {
      Folded f = fold(v);
      IntConv& c = f.node.conv;
      c.levels = levels;
      c.rq = Exporter::sized(c.c_out);
      const bool stem = f.node.mode == IntConvMode::Stem;
      const double pix_std = m.std[0], pix_mean = m.mean[0];
      // Stem: conv(x) = (sum w' p / (255 std) - (mean / std) sum_inside w') / nw.
      for (int o = 0; o < c.c_out; ++o)
        ex.requant(o, stem ? f.scale[o] / (255.0 * pix_std) * q : f.scale[o] * q,
                   stem ? -f.scale[o] * pix_mean / pix_std * q : 0.0, f.shift[o] * q + out.offset, c.rq, c.name);
      if (!stem) c.rq.mult2.clear();
      offset_codes(f.node);
      out.node = c.name;
      emit(i, std::move(f.node));
      return out;
    }
    // A residual sum: one input is a conv + BN (the main branch, requantized), the other the
    // shortcut: codes (identity) or a second conv + BN whose raw accumulator joins the sum.
    const Value &va = value(v.a), &vb = value(v.b);
    const bool a_main = va.kind == K::BnConv;
    const Value &main = a_main ? va : vb, &shortcut = a_main ? vb : va;
    if (main.kind != K::BnConv || (shortcut.kind != K::BnConv && shortcut.kind != K::Codes))
      refuse(v.layer, "an add needs a conv + batchnorm and either codes or a second conv + batchnorm; it adds " +
                          describe(va) + " and " + describe(vb));
    Folded f = fold(main);
    if (f.node.mode == IntConvMode::Stem) refuse(v.layer, "a conv reading the image cannot be a residual branch");
    IntConv& c = f.node.conv;
    c.levels = levels;
    c.rq = Exporter::sized(c.c_out);
    f.node.mode = IntConvMode::Residual;
    std::vector<double> m2(size_t(c.c_out), shortcut.step * q), bias(f.shift);
    if (shortcut.kind == K::BnConv) {
      Folded r = fold(shortcut);
      if (r.node.mode == IntConvMode::Stem) refuse(v.layer, "a conv reading the image cannot be a residual branch");
      r.node.mode = IntConvMode::Raw;  // outputs its accumulator; its scale and shift join the sum's requantization
      for (int o = 0; o < c.c_out; ++o) m2[o] = r.scale[o] * q, bias[o] += r.shift[o];
      f.node.inputs.push_back(r.node.name);
      emit(v.layer, std::move(r.node));
    } else {
      f.node.inputs.push_back(shortcut.node);
    }
    for (int o = 0; o < c.c_out; ++o) {
      ex.requant(o, f.scale[o] * q, m2[o], bias[o] * q + out.offset, c.rq, c.name);
      // Signed shortcut codes stand for a - z: - z mult2 joins the bias, exactly.
      if (shortcut.kind == K::Codes) c.rq.bias[o] -= int64_t(shortcut.offset) * c.rq.mult2[o];
    }
    offset_codes(f.node);
    out.node = c.name;
    emit(i, std::move(f.node));
    return out;
  }

  // The classifier: its input quantizer NAME.act on the pooled codes, then the fc.
  void classifier(int i, const Value& pooled) {
    const nn::LayerDesc& l = d.layers[size_t(i)];
    if (i + 1 != int(d.layers.size()) || pooled.kind != Value::Kind::Pooled)
      refuse(i, "only a final linear classifier reading a global average pool has an integer kernel (it reads " +
                    describe(pooled) + ")");
    int levels;
    double alpha;
    ex.act(l.name + ".act", levels, alpha);
    IntNode pool;
    pool.name = l.name + ".act", pool.op = IntOp::AvgPool, pool.inputs = {pooled.node}, pool.levels = levels;
    Requant rq = Exporter::sized(1);
    // Global average pool of the codes -> NAME.act codes: round(sum step / HW * n / alpha).
    ex.requant(0, pooled.step / double(pooled.hw) * levels / alpha, 0, 0, rq, pool.name);
    pool.mult = rq.mult[0], pool.shift = rq.shift[0];
    emit(i, pool);
    // fc: logits = acc * (alpha / n) / nw * sat + bias.
    IntNode fc;
    fc.name = l.name, fc.op = IntOp::Fc, fc.inputs = {pool.name};
    IntConv& c = fc.conv;
    c.name = l.name, c.c_in = d.layers[size_t(l.input_index[0])].shape[0], c.c_out = l.out, c.k = 1, c.pad = 0;
    c.wbits = ex.bits_of(l.name, "wbits", ex.q.edge_bits);
    std::vector<double> wq;
    c.codes = pack_codes(ex.weight_codes(l.name, c.c_out, c.c_in, 0, c.wbits, &wq), c.c_out, 1, c.c_in, c.wbits);
    const double fc_sat = ex.q.sat ? Exporter::sat_factor(wq, c.c_out) : 1.0;
    fc.logit_scale = float(alpha / levels / c.wlevels() * fc_sat);
    fc.bias = ex.st.get_f32(l.name + ".bias", {c.c_out});
    emit(i, fc);
  }

  void run() {
    using K = Value::Kind;
    using nn::LayerOp;
    for (int i = 0; i < int(d.layers.size()); ++i) {
      const nn::LayerDesc& l = d.layers[size_t(i)];
      const Value& in = value(l.input_index[0]);
      Value v;
      v.layer = i;
      switch (l.op) {
        case LayerOp::Conv:
          if (in.kind != K::Image && in.kind != K::Codes) refuse(i, "it reads " + describe(in));
          if (l.bias) refuse(i, "conv bias (the integer model folds a batchnorm instead)");
          v.kind = K::Conv, v.conv = i;
          break;
        case LayerOp::BatchNorm:
          if (in.kind != K::Conv)
            refuse(i, "a batchnorm folds only into the conv right before it (it reads " + describe(in) +
                          "; pre-activation BN has no integer kernel)");
          v.kind = K::BnConv, v.conv = in.conv;
          if (signed_site(i)) v = activation(i, v, lname(i) + ".act", true);
          break;
        case LayerOp::Relu:
        case LayerOp::Relu6:
          v = activation(i, in, lname(i), false);
          break;
        case LayerOp::Add:
          for (int j : l.input_index) {
            const Value& x = value(j);
            if (x.kind != K::Codes && x.kind != K::BnConv) refuse(i, "it adds " + describe(x));
          }
          v.kind = K::Sum, v.a = l.input_index[0], v.b = l.input_index[1];
          if (signed_site(i)) v = activation(i, v, lname(i) + ".act", true);
          break;
        case LayerOp::MaxPool: {
          if (in.kind != K::Codes) refuse(i, "max pool runs on codes, it reads " + describe(in));
          IntNode n;
          n.name = l.name, n.op = IntOp::MaxPool, n.inputs = {in.node};
          n.kernel = l.kernel, n.stride = l.stride, n.pad = l.padding;
          emit(i, n);
          v = in, v.layer = i, v.node = l.name;
          break;
        }
        case LayerOp::GlobalAvgPool: {
          if (in.kind != K::Codes || in.offset != 0) refuse(i, "it reads " + describe(in));
          const std::vector<int>& s = d.layers[size_t(l.input_index[0])].shape;
          v = in, v.kind = K::Pooled, v.layer = i, v.hw = s.at(1) * s.at(2);
          break;
        }
        case LayerOp::Flatten:
        case LayerOp::Dropout:  // identities at inference
          v = in;
          break;
        case LayerOp::Linear:
          classifier(i, in);
          break;
      }
      vals.push_back(v);
    }
    if (m.nodes.empty() || m.nodes.back().op != IntOp::Fc)
      ex.fail("the model does not end in a linear classifier: no integer form");
  }
};

}  // namespace

IntModel export_int_model(const std::string& checkpoint) {
  const nn::SafeTensors st = nn::read_safetensors(checkpoint);
  const nlohmann::json meta = nn::checkpoint_metadata(st);
  if (meta.is_null() || !meta.contains("model"))
    throw Error(checkpoint + " has no vkqat metadata: only quantization-aware vkqat checkpoints can be exported");
  const nlohmann::json quant_json = meta.value("quant", nlohmann::json());
  if (quant_json.is_null())
    throw Error(checkpoint + " was not trained quantized (no quantization config): train with --wbits/--abits first");
  Exporter ex{st, quant_config_from_json(quant_json), checkpoint};
  const QuantConfig& q = ex.q;
  if (q.wquant != "dorefa")
    ex.fail("--wquant " + q.wquant + " is not supported by the integer export (supported: dorefa)");
  if (q.aquant != "cg-pact" && q.aquant != "pact" && q.aquant != "dorefa")
    ex.fail("--aquant " + q.aquant + " is not supported by the integer export (supported: cg-pact, pact, dorefa)");
  IntModel m;
  m.model = nn::ModelConfig::from_json(meta["model"]);
  m.quant = quant_json;
  m.source = checkpoint;
  try {
    const auto& norm = meta.at("normalization");
    m.mean = norm.at("mean").get<std::array<float, 3>>();
    m.std = norm.at("std").get<std::array<float, 3>>();
  } catch (const nlohmann::json::exception& e) {
    ex.fail(std::string("metadata has no usable normalization: ") + e.what());
  }
  for (int c = 1; c < m.model.in_channels; ++c)
    if (m.mean[c] != m.mean[0] || m.std[c] != m.std[0])
      ex.fail("the integer stem needs the same normalization for every input channel");
  const nn::ModelDescription desc =
      m.model.model_file.empty() ? nn::describe_model(m.model) : nn::load_model_description(m.model.model_file);
  GraphExport{ex, desc, m, {}}.run();
  int_model_shapes(m, checkpoint);
  return m;
}

}  // namespace vkqat::quant

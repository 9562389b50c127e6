#include "quant/int_export.h"

#include <cmath>

#include "backend/error.h"
#include "nn/safetensors.h"
#include "nn/train/checkpoint.h"
#include "quant/dorefa.h"
#include "quant/policy.h"

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

  // Output levels n and clip level alpha of activation quantizer `name`.
  void act(const std::string& name, int& levels, double& alpha) const {
    const int bits = bits_of(name, "abits", q.abits);
    if (bits == 32) fail(name + " is not quantized: the integer model needs every activation quantized");
    if (bits < 1 || bits > 8) fail(name + " has " + std::to_string(bits) + "-bit activations (supported: 1..8)");
    levels = (1 << bits) - 1;
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

  IntConv conv(const std::string& name, int c_in, int c_out, int k, int stride, LayerRole role,
               std::vector<double>* sat_scale) const {
    IntConv c;
    c.name = name, c.c_in = c_in, c.c_out = c_out, c.k = k, c.stride = stride, c.pad = k / 2;
    c.wbits = bits_of(name, "wbits", role == LayerRole::Middle ? q.wbits : q.edge_bits);
    std::vector<double> wq;
    c.codes = pack_codes(weight_codes(name, c_out, c_in, k, c.wbits, &wq), c_out, k * k, c_in, c.wbits);
    // sat_conv rescales every conv's weight (quant/policy.h), folded into the multiplier.
    sat_scale->assign(1, q.sat_conv ? sat_factor(wq, int64_t(c_out) * k * k) : 1.0);
    return c;
  }
  static Requant sized(int c) {
    Requant r;
    r.mult.resize(size_t(c)), r.mult2.resize(size_t(c)), r.shift.resize(size_t(c)), r.bias.resize(size_t(c));
    return r;
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
  const std::vector<BlockSpec> specs = int_resnet_blocks(m.model);
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
  using Role = Exporter::LayerRole;
  const double pix_mean = m.mean[0], pix_std = m.std[0];

  // Stem: conv(x) = (sum w' p / (255 std) - (mean / std) sum_inside w') / nw.
  std::vector<double> sat, g, b;
  int levels;
  double alpha;
  m.stem = ex.conv("conv1", m.model.in_channels, m.model.width, 3, 1, Role::First, &sat);
  ex.bn("bn1", m.model.width, g, b);
  ex.act("conv1.act", levels, alpha);
  m.stem.levels = levels;
  m.stem.rq = Exporter::sized(m.model.width);
  double q_out = levels / alpha;
  for (int o = 0; o < m.model.width; ++o) {
    const double s = g[o] * sat[0] / m.stem.wlevels() * q_out;
    ex.requant(o, s / (255.0 * pix_std), -s * pix_mean / pix_std, b[o] * q_out, m.stem.rq, "conv1");
  }
  double s_in = alpha / levels;  // value of one code of the current activation
  for (const BlockSpec& spec : specs) {
    IntBlock blk;
    const std::string& nm = spec.name;
    blk.c1 = ex.conv(nm + ".conv1", spec.c_in, spec.c_out, 3, spec.stride, Role::Middle, &sat);
    ex.bn(nm + ".bn1", spec.c_out, g, b);
    ex.act(nm + ".act1", levels, alpha);
    blk.c1.levels = levels;
    blk.c1.rq = Exporter::sized(spec.c_out);
    q_out = levels / alpha;
    for (int o = 0; o < spec.c_out; ++o)
      ex.requant(o, g[o] * sat[0] * s_in / blk.c1.wlevels() * q_out, 0, b[o] * q_out, blk.c1.rq, blk.c1.name);
    blk.c1.rq.mult2.clear();
    const double s_mid = alpha / levels;

    blk.c2 = ex.conv(nm + ".conv2", spec.c_out, spec.c_out, 3, 1, Role::Middle, &sat);
    ex.bn(nm + ".bn2", spec.c_out, g, b);
    ex.act(nm + ".act2", levels, alpha);
    blk.c2.levels = levels;
    blk.c2.rq = Exporter::sized(spec.c_out);
    q_out = levels / alpha;
    std::vector<double> gd, bd, sat_d;
    if (spec.down) {
      blk.down = ex.conv(nm + ".downsample.0", spec.c_in, spec.c_out, 1, spec.stride, Role::Middle, &sat_d);
      ex.bn(nm + ".downsample.1", spec.c_out, gd, bd);
    }
    for (int o = 0; o < spec.c_out; ++o) {
      const double m2 = spec.down ? gd[o] * sat_d[0] * s_in / blk.down->wlevels() * q_out : s_in * q_out;
      const double bias = (b[o] + (spec.down ? bd[o] : 0.0)) * q_out;
      ex.requant(o, g[o] * sat[0] * s_mid / blk.c2.wlevels() * q_out, m2, bias, blk.c2.rq, blk.c2.name);
    }
    s_in = alpha / levels;
    m.blocks.push_back(std::move(blk));
  }

  // Global average pool of the codes -> fc.act codes: round(sum s_in / HW * n_fc / alpha_fc).
  int hw = m.model.height, ww = m.model.width_px;
  for (const BlockSpec& spec : specs) hw = (hw - 1) / spec.stride + 1, ww = (ww - 1) / spec.stride + 1;
  ex.act("fc.act", levels, alpha);
  m.fc_levels = levels;
  Requant pool = Exporter::sized(1);
  ex.requant(0, s_in / double(hw * ww) * levels / alpha, 0, 0, pool, "fc.act");
  m.pool_mult = pool.mult[0];
  m.pool_shift = pool.shift[0];

  // fc: logits = acc * (alpha_fc / n_fc) / nw * sat + bias.
  const int classes = m.model.classes, c_in = m.fc_in();
  m.fc_wbits = ex.bits_of("fc", "wbits", q.edge_bits);
  std::vector<double> wq;
  m.fc_codes = pack_codes(ex.weight_codes("fc", classes, c_in, 0, m.fc_wbits, &wq), classes, 1, c_in, m.fc_wbits);
  const double fc_sat = q.sat ? Exporter::sat_factor(wq, classes) : 1.0;
  m.fc_logit_scale = float(alpha / levels / ((1 << m.fc_wbits) - 1) * fc_sat);
  m.fc_bias = st.get_f32("fc.bias", {classes});
  return m;
}

}  // namespace vkqat::quant

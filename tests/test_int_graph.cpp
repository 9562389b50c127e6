// The integer export walks the model description: for resnet20, models/tiny-dw-residual.json
// and tests/data/int-mobile-ops.json (ReLU6, 3x3/2 padded max pool, depthwise convs as a
// residual's main branch and as a BN'd shortcut, flatten, dropout), on synthetic random
// checkpoints: (a) the GPU engine equals the CPU integer reference layer by layer, bit for
// bit; (b) the integer codes and logits match a float fake-quant simulation of the
// description written here from the checkpoint's tensors (so the BN folding, the stem's
// normalization, the residual scales, ReLU6 as PACT's clip and max pool on codes are
// checked, not only reproduced); (c) what has no integer form is refused naming the layer:
// preact-resnet20's pre-activation, a linear bottleneck trained with no quantizer there.
// Linear bottlenecks with their signed quantizers (tests/data/int-linear-bottleneck.json and a
// tiny mobilenet-v2) export to signed offset codes and pass (a) and (b) too.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <set>
#include <unistd.h>

#include "backend/error.h"
#include "nn/model/model_builders.h"
#include "nn/model/network.h"
#include "nn/safetensors.h"
#include "quant/int_engine.h"
#include "quant/int_export.h"
#include "quant/int_reference.h"
#include "quant/policy.h"
#include "testutil.h"

using namespace vkqat;
namespace fs = std::filesystem;

namespace {

constexpr float kMean = 0.286f, kStd = 0.353f;

std::string data_file(const std::string& rel) {
  const char* data = std::getenv("VKQAT_TEST_DATA");  // SOURCE/tests/data, set by ctest
  REQUIRE_MESSAGE(data, "VKQAT_TEST_DATA is not set (run through ctest)");
  return (fs::path(data) / rel).lexically_normal().string();
}

nn::ModelDescription description(const nn::ModelConfig& mc) {
  return mc.model_file.empty() ? nn::describe_model(mc) : nn::load_model_description(mc.model_file);
}

// The signed activation quantizers ("LAYER.act" of a linear bottleneck) the graph gives this
// model under q, by their names.
std::set<std::string> signed_sites(nn::ModelConfig mc, const quant::QuantConfig& q, const nn::ModelDescription& d) {
  mc.in_channels = d.in_channels, mc.height = d.height, mc.width_px = d.width, mc.classes = d.classes;
  auto net = nn::build_network(test::ctx(), mc, 1);
  net->apply_quant_policy(*quant::make_quant_policy(q));
  std::set<std::string> names;
  for (const auto& a : net->quant_sites().acts)
    if (a.quant && a.quant->describe().find("signed") != std::string::npos) names.insert(a.name);
  return names;
}

// A checkpoint with random weights, BN statistics sized to each conv's fan-in (so the codes
// spread over the levels) and PACT clip levels (signed sites included unless
// with_signed_sites is false: a model trained in float there), written as the trainer's
// checkpoints are.
struct Synthetic {
  nn::ModelConfig mc;
  quant::QuantConfig q;
  nn::ModelDescription d;
  std::map<std::string, std::vector<float>> t;
  fs::path path;
  std::set<std::string> signed_acts;  // names of the signed quantizers ("LAYER.act")
};

Synthetic synthetic(const nn::ModelConfig& mc, const quant::QuantConfig& q, const fs::path& path, uint32_t seed,
                    bool with_signed_sites = true) {
  Synthetic s{mc, q, description(mc), {}, path, {}};
  if (with_signed_sites) s.signed_acts = signed_sites(mc, q, s.d);
  std::mt19937 rng(seed);
  auto uni = [&](float lo, float hi) { return std::uniform_real_distribution<float>(lo, hi)(rng); };
  nn::SafeTensors st;
  auto put = [&](const std::string& name, std::vector<int64_t> shape, std::vector<float> v) {
    nn::StTensor t;
    t.dtype = "F32", t.shape = std::move(shape);
    t.data.resize(v.size() * 4);
    std::memcpy(t.data.data(), v.data(), t.data.size());
    st.tensors[name] = std::move(t);
    s.t[name] = std::move(v);
  };
  for (const nn::LayerDesc& l : s.d.layers) {
    const std::vector<int> x = l.input_index[0] < 0 ? std::vector<int>{s.d.in_channels, s.d.height, s.d.width}
                                                    : s.d.layers[size_t(l.input_index[0])].shape;
    auto fill = [&](size_t n, float lo, float hi) {
      std::vector<float> v(n);
      for (float& e : v) e = uni(lo, hi);
      return v;
    };
    if (l.op == nn::LayerOp::Conv) {
      put(l.name + ".weight", {l.out, x[0] / l.groups, l.kernel, l.kernel},
          fill(size_t(l.out) * (x[0] / l.groups) * l.kernel * l.kernel, -1.f, 1.f));
    } else if (l.op == nn::LayerOp::BatchNorm) {
      const nn::LayerDesc& conv = s.d.layers[size_t(l.input_index[0])];
      const int c_in = conv.input_index[0] < 0 ? s.d.in_channels : s.d.layers[size_t(conv.input_index[0])].shape[0];
      const float fan = float(c_in / std::max(conv.groups, 1) * conv.kernel * conv.kernel);
      const size_t c = size_t(x[0]);
      put(l.name + ".weight", {x[0]}, fill(c, 0.5f, 1.5f));
      put(l.name + ".bias", {x[0]}, fill(c, -0.3f, 1.2f));
      put(l.name + ".running_mean", {x[0]}, fill(c, -0.3f * std::sqrt(fan), 0.3f * std::sqrt(fan)));
      put(l.name + ".running_var", {x[0]}, fill(c, 0.2f * fan, 0.4f * fan));
    }
    if (s.signed_acts.count(l.name + ".act")) {
      put(l.name + ".act.alpha", {1}, {uni(1.5f, 4.f)});
    } else if (l.op == nn::LayerOp::Relu || l.op == nn::LayerOp::Relu6) {
      put(l.name + ".alpha", {1}, {uni(1.5f, 4.f)});
    } else if (l.op == nn::LayerOp::Linear) {
      put(l.name + ".weight", {l.out, x[0]}, fill(size_t(l.out) * x[0], -1.f, 1.f));
      put(l.name + ".bias", {l.out}, fill(size_t(l.out), -0.2f, 0.2f));
      put(l.name + ".act.alpha", {1}, {uni(1.f, 3.f)});
    }
  }
  const nlohmann::json meta = {{"format", "vkqat-checkpoint-1"},
                               {"model", mc.to_json()},
                               {"normalization", {{"mean", {kMean, kMean, kMean}}, {"std", {kStd, kStd, kStd}}}},
                               {"quant", q.to_json()}};
  st.metadata["vkqat"] = meta.dump();
  nn::write_safetensors(path.string(), st);
  return s;
}

// Float fake-quant inference of the description (eval mode), in double: DoReFa weight
// levels (the exported codes), BN with running statistics, PACT on every relu / relu6 and on
// the classifier's input, symmetric PACT on the signed sites (codes reported offset by n, as
// the integer model stores them). Returns the codes of every quantized output, named as the
// integer model names the layer that makes them, and the logits.
struct Simulated {
  std::map<std::string, std::vector<int32_t>> codes;
  std::vector<double> logits;
};

Simulated simulate(const Synthetic& s, const quant::IntModel& m, const std::vector<uint8_t>& px, int n) {
  const nn::ModelDescription& d = s.d;
  struct Act {
    std::vector<double> v;  // [n, c, h, w]
    int c, h, w;
    std::string producer;  // the integer layer that makes codes of it
  };
  std::vector<Act> out(d.layers.size());
  Act image{std::vector<double>(px.size()), d.in_channels, d.height, d.width, "input"};
  for (size_t i = 0; i < px.size(); ++i) image.v[i] = (px[i] / 255.0 - kMean) / kStd;
  Simulated r;
  auto quantize = [&](Act& a, double alpha, int levels, const std::string& name) {
    std::vector<int32_t> codes(a.v.size());
    for (size_t i = 0; i < a.v.size(); ++i) {
      codes[i] = int32_t(std::lround(std::clamp(a.v[i], 0.0, alpha) * levels / alpha));
      a.v[i] = codes[i] * alpha / levels;
    }
    r.codes[name] = codes;
  };
  const int levels = (1 << s.q.abits) - 1, side = (1 << (s.q.abits - 1)) - 1;
  auto quantize_signed = [&](Act& a, double alpha, const std::string& name) {
    std::vector<int32_t> codes(a.v.size());
    for (size_t i = 0; i < a.v.size(); ++i) {
      const long level = std::lround(std::clamp(a.v[i], -alpha, alpha) * side / alpha);
      codes[i] = int32_t(level + side);
      a.v[i] = double(level) * alpha / side;
    }
    r.codes[name] = codes;
  };
  auto signed_site = [&](Act& y, const nn::LayerDesc& l) {
    if (s.signed_acts.count(l.name + ".act")) quantize_signed(y, s.t.at(l.name + ".act.alpha")[0], y.producer);
  };
  for (size_t li = 0; li < d.layers.size(); ++li) {
    const nn::LayerDesc& l = d.layers[li];
    const Act& x = l.input_index[0] < 0 ? image : out[size_t(l.input_index[0])];
    Act& y = out[li];
    y.producer = x.producer;
    switch (l.op) {
      case nn::LayerOp::Conv: {
        const quant::IntConv& c = m.nodes[size_t(m.index_of(l.name))].conv;
        const int gi = c.group_in(), go = c.c_out / c.groups, kk = c.k * c.k, nw = c.wlevels();
        const std::vector<int> codes = quant::unpack_codes(c.codes, c.c_out, kk, gi, c.wbits);
        double sat = 1;
        if (s.q.sat_conv) {
          double mean = 0, var = 0;
          for (int v : codes) mean += double(2 * v - nw) / nw / double(codes.size());
          for (int v : codes) var += std::pow(double(2 * v - nw) / nw - mean, 2) / double(codes.size());
          sat = 1 / std::sqrt(double(c.c_out) * kk * var);
        }
        y.c = c.c_out, y.h = (x.h + 2 * c.pad - c.k) / c.stride + 1, y.w = (x.w + 2 * c.pad - c.k) / c.stride + 1;
        y.v.assign(size_t(n) * y.c * y.h * y.w, 0.0);
        y.producer = l.name;
        for (int b = 0; b < n; ++b)
          for (int o = 0; o < y.c; ++o)
            for (int oy = 0; oy < y.h; ++oy)
              for (int ox = 0; ox < y.w; ++ox) {
                double acc = 0;
                for (int cg = 0; cg < gi; ++cg)
                  for (int t = 0; t < kk; ++t) {
                    const int iy = oy * c.stride - c.pad + t / c.k, ix = ox * c.stride - c.pad + t % c.k;
                    if (iy < 0 || iy >= x.h || ix < 0 || ix >= x.w) continue;
                    const double w = double(2 * codes[(size_t(o) * kk + t) * gi + cg] - nw) / nw * sat;
                    acc += w * x.v[((size_t(b) * x.c + (o / go) * gi + cg) * x.h + iy) * x.w + ix];
                  }
                y.v[((size_t(b) * y.c + o) * y.h + oy) * y.w + ox] = acc;
              }
        break;
      }
      case nn::LayerOp::BatchNorm: {
        y = x;
        const auto &g = s.t.at(l.name + ".weight"), &be = s.t.at(l.name + ".bias");
        const auto &mu = s.t.at(l.name + ".running_mean"), &var = s.t.at(l.name + ".running_var");
        for (size_t i = 0; i < y.v.size(); ++i) {
          const size_t c = (i / size_t(y.h * y.w)) % size_t(y.c);
          y.v[i] = (y.v[i] - mu[c]) / std::sqrt(double(var[c]) + 1e-5) * g[c] + be[c];
        }
        signed_site(y, l);
        break;
      }
      case nn::LayerOp::Relu:
      case nn::LayerOp::Relu6:  // PACT replaces it: the clip is at alpha
        y = x;
        quantize(y, s.t.at(l.name + ".alpha")[0], levels, y.producer);
        break;
      case nn::LayerOp::Add: {
        const Act& x2 = out[size_t(l.input_index[1])];
        y = x;
        for (size_t i = 0; i < y.v.size(); ++i) y.v[i] += x2.v[i];
        // The integer model requantizes the sum in the conv + BN branch (the first, if both).
        y.producer = d.layers[size_t(l.input_index[0])].op == nn::LayerOp::BatchNorm ? x.producer : x2.producer;
        signed_site(y, l);
        break;
      }
      case nn::LayerOp::MaxPool: {
        y.c = x.c, y.h = (x.h + 2 * l.padding - l.kernel) / l.stride + 1, y.w = (x.w + 2 * l.padding - l.kernel) / l.stride + 1;
        y.v.assign(size_t(n) * y.c * y.h * y.w, -1e300);
        y.producer = l.name;
        for (int p = 0; p < n * y.c; ++p)
          for (int oy = 0; oy < y.h; ++oy)
            for (int ox = 0; ox < y.w; ++ox)
              for (int t = 0; t < l.kernel * l.kernel; ++t) {
                const int iy = oy * l.stride - l.padding + t / l.kernel, ix = ox * l.stride - l.padding + t % l.kernel;
                if (iy < 0 || iy >= x.h || ix < 0 || ix >= x.w) continue;
                double& dst = y.v[(size_t(p) * y.h + oy) * y.w + ox];
                dst = std::max(dst, x.v[(size_t(p) * x.h + iy) * x.w + ix]);
              }
        std::vector<int32_t> codes(y.v.size());
        const double step = s.t.at(d.layers[size_t(l.input_index[0])].name + ".alpha")[0] / levels;
        for (size_t i = 0; i < codes.size(); ++i) codes[i] = int32_t(std::lround(y.v[i] / step));
        r.codes[l.name] = codes;
        break;
      }
      case nn::LayerOp::GlobalAvgPool:
        y.c = x.c, y.h = y.w = 1;
        y.v.assign(size_t(n) * y.c, 0.0);
        for (size_t i = 0; i < y.v.size(); ++i)
          for (int k = 0; k < x.h * x.w; ++k) y.v[i] += x.v[i * size_t(x.h * x.w) + size_t(k)] / (x.h * x.w);
        break;
      case nn::LayerOp::Flatten:
      case nn::LayerOp::Dropout:
        y = x;
        break;
      case nn::LayerOp::Linear: {
        y = x;
        quantize(y, s.t.at(l.name + ".act.alpha")[0], levels, l.name + ".act");
        const quant::IntConv& fc = m.fc().conv;
        const std::vector<int> codes = quant::unpack_codes(fc.codes, fc.c_out, 1, fc.c_in, fc.wbits);
        const int nw = fc.wlevels();
        double mean = 0, var = 0;
        for (int v : codes) mean += double(2 * v - nw) / nw / double(codes.size());
        for (int v : codes) var += std::pow(double(2 * v - nw) / nw - mean, 2) / double(codes.size());
        const double sat = s.q.sat ? 1 / std::sqrt(double(fc.c_out) * var) : 1.0;
        r.logits.assign(size_t(n) * fc.c_out, 0.0);
        for (int b = 0; b < n; ++b)
          for (int o = 0; o < fc.c_out; ++o) {
            double acc = s.t.at(l.name + ".bias")[size_t(o)];
            for (int c = 0; c < fc.c_in; ++c)
              acc += double(2 * codes[size_t(o) * fc.c_in + c] - nw) / nw * sat * y.v[size_t(b) * fc.c_in + c];
            r.logits[size_t(b) * fc.c_out + o] = acc;
          }
        break;
      }
    }
  }
  return r;
}

std::vector<uint8_t> random_pixels(const nn::ModelConfig& mc, int n, uint32_t seed) {
  std::vector<uint8_t> px(size_t(n) * mc.in_channels * mc.height * mc.width_px);
  std::mt19937 rng(seed);
  for (auto& v : px) v = uint8_t(rng() % 256);
  return px;
}

void check_model(const nn::ModelConfig& mc, const quant::QuantConfig& q, const std::string& tag) {
  const fs::path dir = test::fresh_dir("int-graph-" + tag);
  fs::create_directories(dir);
  const Synthetic s = synthetic(mc, q, dir / "checkpoint.safetensors", 11);
  const fs::path file = dir / "int.safetensors";
  quant::write_int_model(file.string(), quant::export_int_model(s.path.string()));
  const quant::IntModel m = quant::read_int_model(file.string());
  const int n = 3;
  const std::vector<uint8_t> px = random_pixels(mc, n, 5);
  const quant::ref::IntTrace want = quant::ref::int_forward(m, px, n);
  // (a) GPU == CPU reference, on every conv path this device runs.
  std::vector<quant::IntConvPath> paths{quant::IntConvPath::Portable};
  if (!test::lacks_integer_dot_product()) paths.push_back(quant::IntConvPath::Dot);
  for (quant::IntConvPath path : paths) {
    quant::IntEngine engine(test::ctx(), m, n, path);
    const std::vector<float> logits = engine.run(px, n);
    const auto got = engine.layer_outputs(n);
    REQUIRE(got.size() == want.layers.size());
    for (size_t i = 0; i < got.size(); ++i) {
      INFO(tag << " layer " << want.layers[i].first << (path == quant::IntConvPath::Dot ? " (dot)" : ""));
      CHECK(got[i].first == want.layers[i].first);
      CHECK(got[i].second == want.layers[i].second);
    }
    CHECK(logits == want.logits);
  }
  // (b) vs the float fake-quant simulation: codes equal but for rounding-boundary cases
  // (the requantization's multipliers are rounded to 30 bits), logits close.
  const Simulated sim = simulate(s, m, px, n);
  size_t compared = 0;
  for (const auto& [name, codes] : want.layers) {
    const quant::IntNode& node = m.nodes[size_t(m.index_of(name))];
    if (node.op == quant::IntOp::Conv && node.mode == quant::IntConvMode::Raw) continue;
    INFO(tag << " layer " << name);
    REQUIRE(sim.codes.count(name));
    const std::vector<int32_t>& f = sim.codes.at(name);
    REQUIRE(f.size() == codes.size());
    size_t same = 0;
    int worst = 0;
    for (size_t i = 0; i < f.size(); ++i) same += f[i] == codes[i], worst = std::max(worst, std::abs(f[i] - codes[i]));
    CHECK(double(same) >= 0.99 * double(f.size()));
    CHECK(worst <= 1);
    // The comparison means something: the codes spread over the levels.
    CHECK(std::set<int32_t>(codes.begin(), codes.end()).size() >= 3);
    ++compared;
  }
  double worst_logit = 0, spread = 0;
  for (size_t i = 0; i < sim.logits.size(); ++i) {
    worst_logit = std::max(worst_logit, std::fabs(sim.logits[i] - double(want.logits[i])));
    spread = std::max(spread, std::fabs(sim.logits[i]));
  }
  MESSAGE(tag << ": " << m.nodes.size() << " integer layers, " << compared << " compared with the float simulation; "
              << "worst logit difference " << worst_logit << " (largest logit " << spread << ")");
  // Equal classifier input codes leave only float rounding between the logits; one code
  // off by one moves a logit by about a step times a weight.
  const auto& fc_in = want.layers.back();
  CHECK(worst_logit <= (sim.codes.at(fc_in.first) == fc_in.second ? 1e-5 : 0.05) * spread);
  fs::remove_all(dir);
}

nn::ModelConfig file_model(const std::string& path) {
  nn::ModelConfig mc;
  mc.name = nn::kModelFileName;
  mc.model_file = path;
  return mc;
}

quant::QuantConfig w4a4(bool sat_conv) {
  quant::QuantConfig q;
  q.wbits = q.abits = 4;
  q.sat = true;
  q.sat_conv = sat_conv;
  return q;
}

// A synthetic W4A4 checkpoint of mc exported (no SAT), to look at the layers the export makes.
struct Exported {
  Synthetic s;
  quant::IntModel m;
  const quant::IntNode& node(const char* name) const {
    REQUIRE(m.index_of(name) >= 0);
    return m.nodes[size_t(m.index_of(name))];
  }
};

Exported exported(const nn::ModelConfig& mc, const std::string& tag, uint32_t seed) {
  const fs::path dir = test::fresh_dir("int-graph-" + tag);
  fs::create_directories(dir);
  Exported e{synthetic(mc, w4a4(false), dir / "c.safetensors", seed), {}};
  e.m = quant::export_int_model(e.s.path.string());
  fs::remove_all(dir);
  return e;
}

}  // namespace

TEST_CASE("integer graph: resnet20 (width 4) export, reference, GPU and float simulation agree" *
          doctest::test_suite("int")) {
  nn::ModelConfig mc;
  mc.width = 4;
  check_model(mc, w4a4(false), "resnet20");
}

TEST_CASE("integer graph: models/tiny-dw-residual.json (depthwise residual, 2x2 max pool)" * doctest::test_suite("int")) {
  check_model(file_model(data_file("../../models/tiny-dw-residual.json")), w4a4(true), "tiny-dw-residual");
}

TEST_CASE("integer graph: ReLU6, 3x3/2 padded max pool, depthwise main branch and shortcut (int-mobile-ops.json)" *
          doctest::test_suite("int")) {
  const nn::ModelConfig mc = file_model(data_file("int-mobile-ops.json"));
  check_model(mc, w4a4(true), "int-mobile-ops");
  // The layers the description asks for are there, with the ops and modes it implies.
  const Exported e = exported(mc, "mobile-layers", 3);
  auto node = [&](const char* name) -> const quant::IntNode& { return e.node(name); };
  CHECK(node("pool").op == quant::IntOp::MaxPool);
  CHECK((node("pool").h == 7 && node("pool").w == 7));
  CHECK(node("b1.dw").conv.depthwise());
  CHECK(node("b1.project").mode == quant::IntConvMode::Residual);
  CHECK(node("b1.project").inputs == std::vector<std::string>{"b1.dw", "pool"});
  CHECK(node("b2.dw").mode == quant::IntConvMode::Residual);
  CHECK(node("b2.dw").inputs == std::vector<std::string>{"b1.project", "b1.project"});
  CHECK(node("b3.down").mode == quant::IntConvMode::Raw);
  CHECK(node("b3.down").conv.depthwise());
  CHECK(node("b3.conv").inputs == std::vector<std::string>{"b2.dw", "b3.down"});
}

TEST_CASE("integer graph: a linear bottleneck's signed quantizer exports to offset codes (int-linear-bottleneck.json)" *
          doctest::test_suite("int")) {
  const nn::ModelConfig mc = file_model(data_file("int-linear-bottleneck.json"));
  check_model(mc, w4a4(false), "int-linear-bottleneck");
  // The sum 'b1' is requantized, with its shortcut, in b1.project to signed codes: 4 bits,
  // 7 levels per side, offset 7; b2.expand reads them (the offset subtracted in its conv).
  const Exported e = exported(mc, "lb-layers", 3);
  CHECK(e.s.signed_acts == std::set<std::string>{"b1.act"});
  const quant::IntNode& project = e.node("b1.project");
  CHECK(project.mode == quant::IntConvMode::Residual);
  CHECK(project.inputs == std::vector<std::string>{"b1.dw", "conv1"});
  CHECK((project.offset == 7 && project.conv.levels == 14));
  const quant::IntNode& expand = e.node("b2.expand");
  CHECK((expand.conv.x_offset == 7 && expand.offset == 0 && expand.conv.levels == 15));
  CHECK(e.node("b1.dw").conv.x_offset == 0);
}

TEST_CASE("integer graph: tiny mobilenet-v2 (every block output signed) exports; GPU == reference == simulation" *
          doctest::test_suite("int")) {
  nn::ModelConfig mc;
  mc.name = "mobilenet-v2";
  mc.width_mult = 0.25, mc.stem = "cifar";
  mc.in_channels = 1, mc.height = 12, mc.width_px = 12, mc.classes = 10;
  check_model(mc, w4a4(true), "mobilenet-v2");
  const Exported e = exported(mc, "mbv2-layers", 4);
  const quant::IntModel& m = e.m;
  int signed_out = 0, signed_in = 0, signed_shortcut = 0;
  for (const quant::IntNode& n : m.nodes) {
    signed_out += n.offset == 7;
    signed_in += n.conv.x_offset == 7;
    if (n.mode == quant::IntConvMode::Residual) signed_shortcut += m.nodes[size_t(m.index_of(n.inputs[1]))].offset == 7;
  }
  CHECK(e.s.signed_acts.size() == 17);  // one per inverted residual
  CHECK(signed_out == 17);
  CHECK(signed_in == 17);        // the next block's expand conv, features.18 after the last
  CHECK(signed_shortcut == 10);  // torchvision's 10 residual blocks add a signed block output
}

TEST_CASE("integer graph: what has no integer form is refused naming the layer" * doctest::test_suite("int")) {
  const fs::path dir = test::fresh_dir("int-graph-refuse");
  fs::create_directories(dir);
  nn::ModelConfig preact;
  preact.name = "preact-resnet20";
  preact.width = 4;
  const Synthetic p = synthetic(preact, w4a4(false), dir / "preact.safetensors", 1);
  CHECK_THROWS_WITH_AS(quant::export_int_model(p.path.string()),
                       doctest::Contains("layer 'layer1.0' (add) has no integer form: it adds the raw output of conv "
                                         "'layer1.0.conv2'"),
                       Error);
  // A linear bottleneck trained with no quantizer there (--abits 32 at that site): the sum
  // stays float, so what reads it has no exact integer form.
  const Synthetic lb = synthetic(file_model(data_file("int-linear-bottleneck.json")), w4a4(false),
                                 dir / "lb.safetensors", 2, false);
  CHECK_THROWS_WITH_AS(quant::export_int_model(lb.path.string()),
                       doctest::Contains("layer 'b2.expand' (conv) has no integer form: it reads add 'b1' with no "
                                         "activation quantizer after it (a linear bottleneck"),
                       Error);
  fs::remove_all(dir);
}

#include "quant/int_model.h"

#include <cstring>

#include "backend/error.h"
#include "nn/json_number.h"
#include "nn/safetensors.h"

namespace vkqat::quant {
namespace {

using nn::SafeTensors;
using nn::StTensor;

template <class T>
StTensor make_tensor(const char* dtype, const std::vector<int64_t>& shape, const std::vector<T>& v) {
  StTensor t;
  t.dtype = dtype;
  t.shape = shape;
  t.data.resize(v.size() * sizeof(T));
  if (!v.empty()) std::memcpy(t.data.data(), v.data(), t.data.size());
  return t;
}

// Reads tensor `name` of `dtype` and exactly `shape` as T.
template <class T>
std::vector<T> get(const SafeTensors& st, const std::string& name, const char* dtype, const std::vector<int64_t>& shape) {
  const StTensor& t = st.at(name);
  auto shape_str = [](const std::vector<int64_t>& s) {
    std::string r = "[";
    for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
    return r + "]";
  };
  if (t.dtype != dtype || t.shape != shape)
    throw Error(st.source + ": tensor " + name + " is " + t.dtype + " " + shape_str(t.shape) + ", expected " + dtype +
                " " + shape_str(shape) + " (not a vkqat integer model of this architecture?)");
  std::vector<T> v(size_t(t.numel()));
  if (!v.empty()) std::memcpy(v.data(), t.data.data(), v.size() * sizeof(T));
  return v;
}

void put_requant(SafeTensors& st, const std::string& name, const Requant& rq, int rows) {
  st.tensors[name + ".requant.multiplier"] = make_tensor("I32", {rows}, rq.mult);
  if (!rq.mult2.empty()) st.tensors[name + ".requant.multiplier2"] = make_tensor("I32", {rows}, rq.mult2);
  st.tensors[name + ".requant.shift"] = make_tensor("I32", {rows}, rq.shift);
  if (!rq.bias.empty()) st.tensors[name + ".requant.bias"] = make_tensor("I64", {rows}, rq.bias);
}

void check_shifts(const std::string& file, const std::string& name, const std::vector<int32_t>& shifts) {
  for (int32_t s : shifts)
    if (s < 1 || s > 62) throw Error(file + ": " + name + ".requant.shift has " + std::to_string(s) + " (must be 1..62)");
}

std::vector<int64_t> codes_shape(const IntConv& c) {
  return {c.c_out, int64_t(c.k) * c.k, packed_words_per_tap(c.group_in(), c.wbits)};
}

const std::array<std::pair<IntConvMode, const char*>, 4> kModes = {
    {{IntConvMode::Requant, "requant"}, {IntConvMode::Stem, "stem"}, {IntConvMode::Residual, "residual"},
     {IntConvMode::Raw, "raw"}}};
const std::array<std::pair<IntOp, const char*>, 4> kOps = {
    {{IntOp::Conv, "conv"}, {IntOp::MaxPool, "maxpool"}, {IntOp::AvgPool, "avgpool"}, {IntOp::Fc, "fc"}}};

template <class E, size_t N>
E parse_enum(const std::array<std::pair<E, const char*>, N>& table, const std::string& s, const char* what) {
  std::string known;
  for (const auto& [e, n] : table) {
    if (s == n) return e;
    known += (known.empty() ? "" : ", ") + std::string(n);
  }
  throw Error(std::string("unknown ") + what + " '" + s + "' (known: " + known + ")");
}

nlohmann::json node_json(const IntNode& n) {
  nlohmann::json j = {{"name", n.name}, {"op", int_op_name(n.op)}, {"inputs", n.inputs}};
  const IntConv& c = n.conv;
  switch (n.op) {
    case IntOp::Conv:
      j.update({{"c_in", c.c_in}, {"c_out", c.c_out}, {"kernel", c.k}, {"stride", c.stride}, {"padding", c.pad},
                {"groups", c.groups}, {"wbits", c.wbits}, {"levels", c.levels}, {"offset", n.offset},
                {"mode", int_conv_mode_name(n.mode)}});
      break;
    case IntOp::MaxPool:
      j.update({{"kernel", n.kernel}, {"stride", n.stride}, {"padding", n.pad}});
      break;
    case IntOp::AvgPool:
      j["levels"] = n.levels;
      break;
    case IntOp::Fc:
      j.update({{"c_in", c.c_in}, {"classes", c.c_out}, {"wbits", c.wbits}});
      break;
  }
  return j;
}

// A node's attributes from its graph entry (tensors are read later).
IntNode node_from_json(const nlohmann::json& j) {
  IntNode n;
  n.name = j.at("name").get<std::string>();
  n.op = parse_enum(kOps, j.at("op").get<std::string>(), "op");
  for (const auto& in : j.at("inputs")) n.inputs.push_back(in.get<std::string>());
  auto num = [&](const char* key) { return nn::json_int<int>(j.at(key), key); };
  IntConv& c = n.conv;
  c.name = n.name;
  switch (n.op) {
    case IntOp::Conv:
      c.c_in = num("c_in"), c.c_out = num("c_out"), c.k = num("kernel"), c.stride = num("stride");
      c.pad = num("padding"), c.groups = num("groups"), c.wbits = num("wbits"), c.levels = num("levels");
      n.offset = j.contains("offset") ? num("offset") : 0;  // vkqat-int-2: unsigned codes only
      n.mode = parse_enum(kModes, j.at("mode").get<std::string>(), "conv mode");
      break;
    case IntOp::MaxPool:
      n.kernel = num("kernel"), n.stride = num("stride"), n.pad = num("padding");
      break;
    case IntOp::AvgPool:
      n.levels = num("levels");
      break;
    case IntOp::Fc:
      c.c_in = num("c_in"), c.c_out = num("classes"), c.wbits = num("wbits"), c.k = 1, c.pad = 0;
      break;
  }
  return n;
}

// Reads the tensors of node n (attributes and shapes already checked).
void read_tensors(const SafeTensors& st, IntNode& n) {
  IntConv& c = n.conv;
  const std::string& file = st.source;
  switch (n.op) {
    case IntOp::Conv:
    case IntOp::Fc:
      c.codes = get<uint32_t>(st, n.name + ".weight_codes", "U32", codes_shape(c));
      break;
    default:
      break;
  }
  if (n.op == IntOp::Conv && n.mode != IntConvMode::Raw) {
    c.rq.mult = get<int32_t>(st, n.name + ".requant.multiplier", "I32", {c.c_out});
    if (n.mode == IntConvMode::Stem || n.mode == IntConvMode::Residual)
      c.rq.mult2 = get<int32_t>(st, n.name + ".requant.multiplier2", "I32", {c.c_out});
    c.rq.shift = get<int32_t>(st, n.name + ".requant.shift", "I32", {c.c_out});
    c.rq.bias = get<int64_t>(st, n.name + ".requant.bias", "I64", {c.c_out});
    check_shifts(file, n.name, c.rq.shift);
  } else if (n.op == IntOp::AvgPool) {
    n.mult = get<int32_t>(st, n.name + ".requant.multiplier", "I32", {1})[0];
    n.shift = get<int32_t>(st, n.name + ".requant.shift", "I32", {1})[0];
    check_shifts(file, n.name, {n.shift});
  } else if (n.op == IntOp::Fc) {
    n.logit_scale = get<float>(st, n.name + ".logit_scale", "F32", {1})[0];
    n.bias = get<float>(st, n.name + ".bias", "F32", {c.c_out});
  }
}

}  // namespace

int int_container_bits(int bits) {
  if (bits < 1 || bits > 8) throw Error("integer codes need 1..8 bits, got " + std::to_string(bits));
  return bits <= 2 ? 2 : bits <= 4 ? 4 : 8;
}

int packed_words_per_tap(int c_in, int bits) {
  const int per_word = 32 / int_container_bits(bits);
  return (c_in + per_word - 1) / per_word;
}

std::vector<uint32_t> pack_codes(const std::vector<int>& codes, int rows, int taps, int c_in, int bits) {
  const int cb = int_container_bits(bits), per_word = 32 / cb, words = packed_words_per_tap(c_in, bits);
  if (codes.size() != size_t(rows) * taps * c_in) throw Error("pack_codes: wrong number of codes");
  std::vector<uint32_t> out(size_t(rows) * taps * words, 0u);
  for (int r = 0; r < rows; ++r)
    for (int t = 0; t < taps; ++t)
      for (int c = 0; c < c_in; ++c) {
        const int v = codes[(size_t(r) * taps + t) * c_in + c];
        if (v < 0 || v >= (1 << bits)) throw Error("pack_codes: code " + std::to_string(v) + " out of range");
        out[(size_t(r) * taps + t) * words + c / per_word] |= uint32_t(v) << ((c % per_word) * cb);
      }
  return out;
}

std::vector<int> unpack_codes(const std::vector<uint32_t>& words_in, int rows, int taps, int c_in, int bits) {
  const int cb = int_container_bits(bits), per_word = 32 / cb, words = packed_words_per_tap(c_in, bits);
  if (words_in.size() != size_t(rows) * taps * words) throw Error("unpack_codes: wrong number of words");
  std::vector<int> out(size_t(rows) * taps * c_in);
  for (int r = 0; r < rows; ++r)
    for (int t = 0; t < taps; ++t)
      for (int c = 0; c < c_in; ++c)
        out[(size_t(r) * taps + t) * c_in + c] =
            int((words_in[(size_t(r) * taps + t) * words + c / per_word] >> ((c % per_word) * cb)) & ((1u << cb) - 1));
  return out;
}

const char* int_conv_mode_name(IntConvMode m) {
  for (const auto& [e, n] : kModes)
    if (e == m) return n;
  return "?";
}

const char* int_op_name(IntOp op) {
  for (const auto& [e, n] : kOps)
    if (e == op) return n;
  return "?";
}

int IntModel::index_of(const std::string& name) const {
  for (size_t i = 0; i < nodes.size(); ++i)
    if (nodes[i].name == name) return int(i);
  return -1;
}

int IntModel::count(IntOp op) const {
  int k = 0;
  for (const IntNode& n : nodes) k += n.op == op;
  return k;
}

// Channels of any integer layer: keeps the fc's int32 sum (c_in * 255 * 255) below 2^31.
constexpr int kMaxChannels = 4096;

void int_model_shapes(IntModel& m, const std::string& where) {
  const nn::ModelConfig& mc = m.model;
  if (m.nodes.empty() || m.nodes.back().op != IntOp::Fc) throw Error(where + ": the last layer must be the fc");
  for (size_t i = 0; i < m.nodes.size(); ++i) {
    IntNode& n = m.nodes[i];
    IntConv& c = n.conv;
    auto fail = [&](const std::string& why) -> void {
      throw Error(where + ": layer '" + n.name + "' (" + int_op_name(n.op) + "): " + why);
    };
    if (n.name.empty() || n.name == "input" || m.index_of(n.name) != int(i)) fail("empty, reserved or duplicate name");
    const size_t want_inputs = n.op == IntOp::Conv && n.mode == IntConvMode::Residual ? 2 : 1;
    if (n.inputs.size() != want_inputs) fail("needs " + std::to_string(want_inputs) + " input(s)");
    n.input_index.clear();
    for (const std::string& in : n.inputs) {
      const int j = in == "input" ? -1 : m.index_of(in);
      if (in != "input" && (j < 0 || j >= int(i))) fail("input '" + in + "' is not an earlier layer");
      if (j >= 0 && m.nodes[size_t(j)].op == IntOp::Fc) fail("reads the fc");
      n.input_index.push_back(j);
    }
    const int j0 = n.input_index[0];
    const bool from_image = j0 < 0;
    const int ic = from_image ? mc.in_channels : m.nodes[size_t(j0)].c;
    const int ih = from_image ? mc.height : m.nodes[size_t(j0)].h, iw = from_image ? mc.width_px : m.nodes[size_t(j0)].w;
    const int in_offset = from_image ? 0 : m.nodes[size_t(j0)].offset;
    // Only a stem conv reads pixels; a raw accumulator is only ever a residual's second input.
    if (from_image != (n.op == IntOp::Conv && n.mode == IntConvMode::Stem))
      fail(from_image ? "only a stem conv reads the image" : "a stem conv must read the image");
    if (!from_image && m.nodes[size_t(j0)].op == IntOp::Conv && m.nodes[size_t(j0)].mode == IntConvMode::Raw)
      fail("reads the raw accumulator of '" + n.inputs[0] + "' (only a residual conv's shortcut may)");
    switch (n.op) {
      case IntOp::Conv: {
        if (c.c_in != ic) fail("c_in " + std::to_string(c.c_in) + ", its input has " + std::to_string(ic) + " channels");
        if (c.c_out < 1 || c.c_out > kMaxChannels || c.k < 1 || c.k > 15 || c.stride < 1 || c.stride > 8 || c.pad < 0 ||
            c.pad >= c.k)
          fail("implausible geometry");
        if (c.groups != 1 && !c.depthwise()) fail("groups " + std::to_string(c.groups) + " is neither 1 nor depthwise");
        if (c.wbits < 2 || c.wbits > 8) fail("wbits " + std::to_string(c.wbits) + " (must be 2..8)");
        if (n.mode == IntConvMode::Raw ? c.levels != 0 : (c.levels < 1 || c.levels > 255))
          fail("output levels " + std::to_string(c.levels));
        if (n.offset != 0 && (n.mode == IntConvMode::Raw || 2 * n.offset != c.levels))
          fail("output offset " + std::to_string(n.offset) + " (0, or levels / 2 for signed codes)");
        c.x_offset = in_offset;
        n.c = c.c_out, n.h = (ih + 2 * c.pad - c.k) / c.stride + 1, n.w = (iw + 2 * c.pad - c.k) / c.stride + 1;
        if (ih + 2 * c.pad < c.k || iw + 2 * c.pad < c.k) fail("input smaller than the kernel");
        if (n.mode == IntConvMode::Residual) {
          const IntNode& r = m.nodes[size_t(n.input_index[1] < 0 ? 0 : n.input_index[1])];
          if (n.input_index[1] < 0 || r.c != n.c || r.h != n.h || r.w != n.w)
            fail("shortcut '" + n.inputs[1] + "' does not have the output's shape");
        }
        break;
      }
      case IntOp::MaxPool:
        if (n.kernel < 1 || n.kernel > 15 || n.stride < 1 || n.stride > 15 || n.pad < 0 || 2 * n.pad > n.kernel ||
            ih + 2 * n.pad < n.kernel || iw + 2 * n.pad < n.kernel)
          fail("implausible geometry");
        n.c = ic, n.h = (ih + 2 * n.pad - n.kernel) / n.stride + 1, n.w = (iw + 2 * n.pad - n.kernel) / n.stride + 1;
        n.offset = in_offset;  // the max of offset codes is the offset code of the max
        break;
      case IntOp::AvgPool:
        if (n.levels < 1 || n.levels > 255) fail("levels " + std::to_string(n.levels) + " (must be 1..255)");
        if (in_offset != 0) fail("reads signed (offset) codes; the classifier's input quantizer takes unsigned ones");
        n.c = ic, n.h = n.w = 1;
        break;
      case IntOp::Fc:
        if (i + 1 != m.nodes.size()) fail("the fc must be the last layer");
        if (m.nodes[size_t(j0)].op != IntOp::AvgPool) fail("the fc must read the avgpool codes");
        if (c.c_in != ic || c.c_out != mc.classes)
          fail("is " + std::to_string(c.c_in) + " -> " + std::to_string(c.c_out) + ", expected " + std::to_string(ic) +
               " -> " + std::to_string(mc.classes) + " classes");
        if (c.wbits < 2 || c.wbits > 8) fail("wbits " + std::to_string(c.wbits) + " (must be 2..8)");
        n.c = c.c_out, n.h = n.w = 1;
        break;
    }
    // The engine's buffers stay allocatable whatever a file says.
    const int64_t codes = int64_t(n.c) * n.h * n.w;
    if (codes > (int64_t(1) << 26)) fail("output of " + std::to_string(codes) + " codes per image is implausibly large");
  }
}

void write_int_model(const std::string& path, const IntModel& m) {
  SafeTensors st;
  nlohmann::json graph = nlohmann::json::array();
  for (const IntNode& n : m.nodes) {
    graph.push_back(node_json(n));
    const IntConv& c = n.conv;
    if (n.op == IntOp::Conv || n.op == IntOp::Fc) st.tensors[n.name + ".weight_codes"] = make_tensor("U32", codes_shape(c), c.codes);
    if (n.op == IntOp::Conv && n.mode != IntConvMode::Raw) put_requant(st, n.name, c.rq, c.c_out);
    if (n.op == IntOp::AvgPool) {
      st.tensors[n.name + ".requant.multiplier"] = make_tensor("I32", {1}, std::vector<int32_t>{n.mult});
      st.tensors[n.name + ".requant.shift"] = make_tensor("I32", {1}, std::vector<int32_t>{n.shift});
    }
    if (n.op == IntOp::Fc) {
      st.tensors[n.name + ".logit_scale"] = make_tensor("F32", {1}, std::vector<float>{n.logit_scale});
      st.tensors[n.name + ".bias"] = make_tensor("F32", {c.c_out}, n.bias);
    }
  }
  nlohmann::json meta = {{"format", kIntModelFormat},
                         {"model", m.model.to_json()},
                         {"normalization", {{"mean", m.mean}, {"std", m.std}}},
                         {"quant", m.quant},
                         {"source", m.source},
                         {"graph", graph}};
  st.metadata["vkqat_int"] = meta.dump();
  nn::write_safetensors(path, st);
}

IntModel read_int_model(const std::string& path) {
  SafeTensors st = nn::read_safetensors(path);
  auto it = st.metadata.find("vkqat_int");
  if (it == st.metadata.end())
    throw Error(path + " is not a vkqat integer model (no vkqat_int metadata; a training checkpoint? run `vkqat export` on it)");
  nlohmann::json meta = nlohmann::json::parse(it->second, nullptr, false);
  if (meta.is_discarded() || !meta.is_object())
    throw Error(path + ": vkqat_int metadata is not valid " + std::string(kIntModelFormat) + " JSON");
  // value("format", "") would throw a type error for a non-string format: checked by hand.
  const nlohmann::json format = meta.contains("format") ? meta["format"] : nlohmann::json();
  if (format == "vkqat-int-1")
    throw Error(path + " is a vkqat-int-1 model (the ResNet-only layout of an older vkqat): re-export it from its "
                       "checkpoint with `vkqat export`");
  if (!format.is_string() || (format.get<std::string>() != kIntModelFormat && format.get<std::string>() != "vkqat-int-2"))
    throw Error(path + ": vkqat_int metadata has format " + format.dump() + ", this vkqat reads " +
                std::string(kIntModelFormat));
  IntModel m;
  std::string layer = "";
  try {
    m.model = nn::ModelConfig::from_json(meta.at("model"));
    for (const char* key : {"mean", "std"}) {  // element by element: a double beyond float range is UB in get<float>
      const nlohmann::json& v = meta.at("normalization").at(key);
      if (!v.is_array() || v.size() != 3) throw Error(std::string("normalization ") + key + " must be 3 numbers");
      std::array<float, 3>& out = std::string(key) == "mean" ? m.mean : m.std;
      for (int i = 0; i < 3; ++i) out[size_t(i)] = nn::json_float(v[size_t(i)], std::string("normalization ") + key);
    }
    m.quant = meta.value("quant", nlohmann::json());
    m.source = meta.value("source", "");
    const nlohmann::json& graph = meta.at("graph");
    if (!graph.is_array() || graph.empty() || graph.size() > 100000) throw Error("graph must be a non-empty list of layers");
    for (size_t i = 0; i < graph.size(); ++i) {
      layer = "graph layer " + std::to_string(i) + ": ";
      m.nodes.push_back(node_from_json(graph[i]));
    }
  } catch (const nlohmann::json::exception& e) {
    throw Error(path + ": vkqat_int metadata: " + layer + e.what());
  } catch (const Error& e) {
    throw Error(path + ": " + layer + e.what());
  }
  const nn::ModelConfig& mc = m.model;
  if (mc.in_channels < 1 || mc.in_channels > 3 || mc.classes < 2 || mc.classes > 100000 || mc.height < 4 ||
      mc.height > 1024 || mc.width_px < 4 || mc.width_px > 1024)
    throw Error(path + ": implausible model config " + mc.to_json().dump());
  int_model_shapes(m, path);
  for (IntNode& n : m.nodes) read_tensors(st, n);
  return m;
}

}  // namespace vkqat::quant

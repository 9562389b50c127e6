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

void put_conv(SafeTensors& st, nlohmann::json& layers, const IntConv& c) {
  const int64_t words = packed_words_per_tap(c.c_in, c.wbits);
  st.tensors[c.name + ".weight_codes"] = make_tensor("U32", {c.c_out, int64_t(c.k) * c.k, words}, c.codes);
  layers[c.name] = {{"wbits", c.wbits}, {"levels", c.levels}};
  if (c.rq.mult.empty()) return;
  st.tensors[c.name + ".requant.multiplier"] = make_tensor("I32", {c.c_out}, c.rq.mult);
  if (!c.rq.mult2.empty()) st.tensors[c.name + ".requant.multiplier2"] = make_tensor("I32", {c.c_out}, c.rq.mult2);
  st.tensors[c.name + ".requant.shift"] = make_tensor("I32", {c.c_out}, c.rq.shift);
  st.tensors[c.name + ".requant.bias"] = make_tensor("I64", {c.c_out}, c.rq.bias);
}

// Fills the codes and requantization of a conv whose geometry is already set.
void get_conv(const SafeTensors& st, const nlohmann::json& layers, IntConv& c, bool requant, bool mult2) {
  const std::string& file = st.source;
  if (!layers.contains(c.name)) throw Error(file + ": layer " + c.name + " missing from the vkqat_int metadata");
  try {
    c.wbits = nn::json_int<int>(layers[c.name].at("wbits"), "wbits");
    c.levels = nn::json_int<int>(layers[c.name].at("levels"), "levels");
  } catch (const nlohmann::json::exception& e) {
    throw Error(file + ": layer " + c.name + ": " + e.what());
  } catch (const Error& e) {
    throw Error(file + ": layer " + c.name + ": " + e.what());
  }
  if (c.wbits < 2 || c.wbits > 8) throw Error(file + ": layer " + c.name + " has wbits " + std::to_string(c.wbits));
  if (requant ? (c.levels < 1 || c.levels > 255) : c.levels != 0)
    throw Error(file + ": layer " + c.name + " has output levels " + std::to_string(c.levels));
  c.codes = get<uint32_t>(st, c.name + ".weight_codes", "U32",
                          {c.c_out, int64_t(c.k) * c.k, packed_words_per_tap(c.c_in, c.wbits)});
  if (!requant) return;
  c.rq.mult = get<int32_t>(st, c.name + ".requant.multiplier", "I32", {c.c_out});
  if (mult2) c.rq.mult2 = get<int32_t>(st, c.name + ".requant.multiplier2", "I32", {c.c_out});
  c.rq.shift = get<int32_t>(st, c.name + ".requant.shift", "I32", {c.c_out});
  c.rq.bias = get<int64_t>(st, c.name + ".requant.bias", "I64", {c.c_out});
  for (int32_t s : c.rq.shift)
    if (s < 1 || s > 62) throw Error(file + ": " + c.name + ".requant.shift has " + std::to_string(s) + " (must be 1..62)");
}

IntConv conv_geometry(const std::string& name, int c_in, int c_out, int k, int stride) {
  IntConv c;
  c.name = name, c.c_in = c_in, c.c_out = c_out, c.k = k, c.stride = stride, c.pad = k / 2;
  return c;
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

std::vector<BlockSpec> int_resnet_blocks(const nn::ModelConfig& m) {
  int per_stage = m.name == "resnet20" ? 3 : m.name == "resnet32" ? 5 : m.name == "resnet56" ? 9 : 0;
  if (!per_stage)
    throw Error("model " + m.name + ": the integer path supports resnet20, resnet32 and resnet56 only");
  std::vector<BlockSpec> out;
  int c = m.width;
  for (int stage = 0; stage < 3; ++stage)
    for (int b = 0; b < per_stage; ++b) {
      const int c_out = m.width << stage, stride = (stage > 0 && b == 0) ? 2 : 1;
      out.push_back({"layer" + std::to_string(stage + 1) + "." + std::to_string(b), c, c_out, stride,
                     stride != 1 || c != c_out});
      c = c_out;
    }
  return out;
}

int IntModel::fc_in() const { return model.width << 2; }

void write_int_model(const std::string& path, const IntModel& m) {
  SafeTensors st;
  nlohmann::json layers = nlohmann::json::object();
  put_conv(st, layers, m.stem);
  for (const IntBlock& b : m.blocks) {
    put_conv(st, layers, b.c1);
    put_conv(st, layers, b.c2);
    if (b.down) put_conv(st, layers, *b.down);
  }
  st.tensors["fc.act.requant.multiplier"] = make_tensor("I32", {1}, std::vector<int32_t>{m.pool_mult});
  st.tensors["fc.act.requant.shift"] = make_tensor("I32", {1}, std::vector<int32_t>{m.pool_shift});
  st.tensors["fc.weight_codes"] =
      make_tensor("U32", {m.model.classes, 1, packed_words_per_tap(m.fc_in(), m.fc_wbits)}, m.fc_codes);
  st.tensors["fc.logit_scale"] = make_tensor("F32", {1}, std::vector<float>{m.fc_logit_scale});
  st.tensors["fc.bias"] = make_tensor("F32", {m.model.classes}, m.fc_bias);
  layers["fc"] = {{"wbits", m.fc_wbits}, {"levels", 0}};
  layers["fc.act"] = {{"levels", m.fc_levels}};
  nlohmann::json meta = {{"format", kIntModelFormat},
                         {"model", m.model.to_json()},
                         {"normalization", {{"mean", m.mean}, {"std", m.std}}},
                         {"quant", m.quant},
                         {"source", m.source},
                         {"layers", layers}};
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
  if (!format.is_string() || format.get<std::string>() != kIntModelFormat)
    throw Error(path + ": vkqat_int metadata has format " + format.dump() + ", this vkqat reads " +
                std::string(kIntModelFormat));
  IntModel m;
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
    m.fc_levels = nn::json_int<int>(meta.at("layers").at("fc.act").at("levels"), "fc.act levels");
    m.fc_wbits = nn::json_int<int>(meta.at("layers").at("fc").at("wbits"), "fc wbits");
  } catch (const nlohmann::json::exception& e) {
    throw Error(path + ": vkqat_int metadata: " + e.what());
  } catch (const Error& e) {
    throw Error(path + ": " + e.what());
  }
  const nlohmann::json& layers = meta["layers"];
  const nn::ModelConfig& mc = m.model;
  if (mc.in_channels < 1 || mc.in_channels > 3 || mc.classes < 2 || mc.classes > 100000 || mc.width < 1 ||
      mc.width > 1024 || mc.height < 4 || mc.height > 1024 || mc.width_px < 4 || mc.width_px > 1024)
    throw Error(path + ": implausible model config " + mc.to_json().dump());
  if (m.fc_levels < 1 || m.fc_levels > 255 || m.fc_wbits < 2 || m.fc_wbits > 8)
    throw Error(path + ": fc levels / wbits out of range");
  m.stem = conv_geometry("conv1", mc.in_channels, mc.width, 3, 1);
  get_conv(st, layers, m.stem, true, true);
  for (const BlockSpec& s : int_resnet_blocks(mc)) {
    IntBlock b;
    b.c1 = conv_geometry(s.name + ".conv1", s.c_in, s.c_out, 3, s.stride);
    get_conv(st, layers, b.c1, true, false);
    b.c2 = conv_geometry(s.name + ".conv2", s.c_out, s.c_out, 3, 1);
    get_conv(st, layers, b.c2, true, true);
    if (s.down) {
      b.down = conv_geometry(s.name + ".downsample.0", s.c_in, s.c_out, 1, s.stride);
      get_conv(st, layers, *b.down, false, false);
    }
    m.blocks.push_back(std::move(b));
  }
  m.pool_mult = get<int32_t>(st, "fc.act.requant.multiplier", "I32", {1})[0];
  m.pool_shift = get<int32_t>(st, "fc.act.requant.shift", "I32", {1})[0];
  if (m.pool_shift < 1 || m.pool_shift > 62) throw Error(path + ": fc.act.requant.shift out of range 1..62");
  m.fc_codes = get<uint32_t>(st, "fc.weight_codes", "U32", {mc.classes, 1, packed_words_per_tap(m.fc_in(), m.fc_wbits)});
  m.fc_logit_scale = get<float>(st, "fc.logit_scale", "F32", {1})[0];
  m.fc_bias = get<float>(st, "fc.bias", "F32", {mc.classes});
  return m;
}

}  // namespace vkqat::quant

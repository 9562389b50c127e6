// safetensors reader/writer. See safetensors.h.
#include "nn/safetensors.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

#include "backend/error.h"

namespace vkqat::nn {
namespace {

constexpr uint64_t kMaxHeader = 100'000'000;  // same limit as the reference implementation

struct DtypeInfo {
  const char* name;
  size_t size;
};
// In the order of the reference implementation's Dtype enum: the writer sorts tensors by
// descending position in this table (then by name), exactly like safetensors' prepare().
constexpr DtypeInfo kDtypes[] = {
    {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1}, {"F8_E8M0", 1},
    {"I16", 2},  {"U16", 2}, {"F16", 2}, {"BF16", 2},    {"I32", 4},     {"U32", 4},
    {"F32", 4},  {"F64", 8}, {"I64", 8}, {"U64", 8},
};

int dtype_rank(const std::string& d) {
  for (size_t i = 0; i < std::size(kDtypes); ++i)
    if (d == kDtypes[i].name) return int(i);
  return -1;
}

std::string dtype_list() {
  std::string s;
  for (const auto& d : kDtypes) s += std::string(s.empty() ? "" : ", ") + d.name;
  return s;
}

// numel * elem_size with overflow checks; false on overflow or negative dimension.
bool byte_size(const std::vector<int64_t>& shape, size_t elem, uint64_t& out) {
  uint64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) return false;
    if (d != 0 && n > std::numeric_limits<uint64_t>::max() / uint64_t(d)) return false;
    n *= uint64_t(d);
  }
  if (elem != 0 && n > std::numeric_limits<uint64_t>::max() / elem) return false;
  out = n * elem;
  return true;
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

std::string src_name(const std::string& source) { return source.empty() ? "safetensors" : source; }

void check_tensor(const std::string& where, const std::string& name, const StTensor& t) {
  const std::string p = where + ": tensor '" + name + "': ";
  if (name.empty()) throw Error(where + ": empty tensor name");
  if (name == "__metadata__") throw Error(p + "reserved name");
  size_t es = st_dtype_size(t.dtype);
  if (es == 0) throw Error(p + "unknown dtype '" + t.dtype + "' (known: " + dtype_list() + ")");
  uint64_t bytes = 0;
  if (!byte_size(t.shape, es, bytes)) throw Error(p + "invalid shape " + shape_str(t.shape));
  if (bytes != t.data.size())
    throw Error(p + "holds " + std::to_string(t.data.size()) + " bytes but shape " + shape_str(t.shape) + " of " +
                t.dtype + " needs " + std::to_string(bytes));
}

std::vector<uint8_t> serialize_impl(const SafeTensors& st, const std::string& where) {
  std::vector<const std::pair<const std::string, StTensor>*> order;
  for (const auto& kv : st.tensors) {
    check_tensor(where, kv.first, kv.second);
    order.push_back(&kv);
  }
  std::stable_sort(order.begin(), order.end(), [](auto* a, auto* b) {
    int ra = dtype_rank(a->second.dtype), rb = dtype_rank(b->second.dtype);
    if (ra != rb) return ra > rb;
    return a->first < b->first;
  });
  nlohmann::ordered_json h = nlohmann::ordered_json::object();
  if (!st.metadata.empty()) {
    nlohmann::ordered_json m = nlohmann::ordered_json::object();
    for (const auto& [k, v] : st.metadata) m[k] = v;
    h["__metadata__"] = std::move(m);
  }
  uint64_t offset = 0;
  for (auto* kv : order) {
    nlohmann::ordered_json info = nlohmann::ordered_json::object();
    info["dtype"] = kv->second.dtype;
    info["shape"] = kv->second.shape;
    info["data_offsets"] = {offset, offset + kv->second.data.size()};
    offset += kv->second.data.size();
    h[kv->first] = std::move(info);
  }
  std::string header;
  try {
    header = h.dump();
  } catch (const nlohmann::json::exception& e) {
    throw Error(where + ": cannot encode header (tensor names and metadata must be UTF-8): " + e.what());
  }
  header.append((8 - header.size() % 8) % 8, ' ');
  std::vector<uint8_t> out;
  out.reserve(8 + header.size() + offset);
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out.push_back(uint8_t(n >> (8 * i)));
  out.insert(out.end(), header.begin(), header.end());
  for (auto* kv : order) out.insert(out.end(), kv->second.data.begin(), kv->second.data.end());
  return out;
}

}  // namespace

size_t st_dtype_size(const std::string& dtype) {
  int r = dtype_rank(dtype);
  return r < 0 ? 0 : kDtypes[r].size;
}

int64_t StTensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

const StTensor& SafeTensors::at(const std::string& name) const {
  auto it = tensors.find(name);
  if (it == tensors.end()) throw Error(src_name(source) + ": tensor '" + name + "' not found");
  return it->second;
}

std::vector<float> SafeTensors::get_f32(const std::string& name) const {
  const StTensor& t = at(name);
  if (t.dtype != "F32")
    throw Error(src_name(source) + ": tensor '" + name + "' has dtype " + t.dtype + ", expected F32");
  std::vector<float> v(t.data.size() / 4);
  if (!v.empty()) std::memcpy(v.data(), t.data.data(), v.size() * 4);
  return v;
}

std::vector<float> SafeTensors::get_f32(const std::string& name, const std::vector<int64_t>& shape) const {
  const StTensor& t = at(name);
  if (t.shape != shape)
    throw Error(src_name(source) + ": tensor '" + name + "' has shape " + shape_str(t.shape) + ", expected " +
                shape_str(shape));
  return get_f32(name);
}

std::vector<int64_t> SafeTensors::get_i64(const std::string& name) const {
  const StTensor& t = at(name);
  if (t.dtype != "I64")
    throw Error(src_name(source) + ": tensor '" + name + "' has dtype " + t.dtype + ", expected I64");
  std::vector<int64_t> v(t.data.size() / 8);
  if (!v.empty()) std::memcpy(v.data(), t.data.data(), v.size() * 8);
  return v;
}

void SafeTensors::add_f32(const std::string& name, const std::vector<int64_t>& shape, const float* data) {
  StTensor t;
  t.dtype = "F32";
  t.shape = shape;
  uint64_t bytes = 0;
  if (!byte_size(shape, 4, bytes)) throw Error("safetensors: tensor '" + name + "': invalid shape " + shape_str(shape));
  t.data.resize(bytes);
  if (bytes) std::memcpy(t.data.data(), data, bytes);
  tensors[name] = std::move(t);
}

void SafeTensors::add_f32(const std::string& name, const std::vector<int64_t>& shape, const std::vector<float>& data) {
  uint64_t bytes = 0;
  if (!byte_size(shape, 4, bytes) || bytes != data.size() * 4)
    throw Error("safetensors: tensor '" + name + "': " + std::to_string(data.size()) +
                " values do not match shape " + shape_str(shape));
  add_f32(name, shape, data.data());
}

void SafeTensors::add_i64(const std::string& name, const std::vector<int64_t>& shape,
                          const std::vector<int64_t>& data) {
  uint64_t bytes = 0;
  if (!byte_size(shape, 8, bytes) || bytes != data.size() * 8)
    throw Error("safetensors: tensor '" + name + "': " + std::to_string(data.size()) +
                " values do not match shape " + shape_str(shape));
  StTensor t;
  t.dtype = "I64";
  t.shape = shape;
  t.data.resize(bytes);
  if (bytes) std::memcpy(t.data.data(), data.data(), bytes);
  tensors[name] = std::move(t);
}

SafeTensors read_safetensors(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    if (!std::filesystem::exists(path, ec)) throw Error(path + ": file not found");
    throw Error(path + ": not a regular file");
  }
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path + ": cannot open: " + std::strerror(errno));
  std::vector<uint8_t> buf((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (f.bad()) throw Error(path + ": read error");

  if (buf.size() < 8)
    throw Error(path + ": file too short (" + std::to_string(buf.size()) + " bytes) for a safetensors header");
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t(buf[size_t(i)]) << (8 * i);
  if (n > kMaxHeader)
    throw Error(path + ": header length " + std::to_string(n) + " is absurd (> 100 MB); not a safetensors file?");
  if (n > buf.size() - 8)
    throw Error(path + ": header length " + std::to_string(n) + " exceeds the file size (" +
                std::to_string(buf.size()) + " bytes); truncated or not a safetensors file");
  const char* hb = reinterpret_cast<const char*>(buf.data() + 8);
  if (n == 0 || hb[0] != '{') throw Error(path + ": header does not start with '{'; not a safetensors file");

  // Parse, noting duplicate top-level keys (nlohmann would silently keep the last one).
  std::set<std::string> seen;
  std::string duplicate;
  nlohmann::json::parser_callback_t cb = [&](int depth, nlohmann::json::parse_event_t ev, nlohmann::json& v) {
    if (ev == nlohmann::json::parse_event_t::key && depth == 1 && v.is_string()) {
      if (!seen.insert(v.get<std::string>()).second && duplicate.empty()) duplicate = v.get<std::string>();
    }
    return true;
  };
  nlohmann::json h;
  try {
    h = nlohmann::json::parse(hb, hb + n, cb);
  } catch (const nlohmann::json::exception& e) {
    throw Error(path + ": header is not valid JSON: " + e.what());
  }
  if (!duplicate.empty()) throw Error(path + ": tensor '" + duplicate + "' appears twice in the header");
  if (!h.is_object()) throw Error(path + ": header is not a JSON object");

  SafeTensors st;
  st.source = path;
  const uint64_t data_start = 8 + n, data_len = buf.size() - data_start;
  struct Span {
    uint64_t begin, end;
    const std::string* name;
  };
  std::vector<Span> spans;
  for (auto it = h.begin(); it != h.end(); ++it) {
    const std::string& name = it.key();
    const nlohmann::json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) throw Error(path + ": __metadata__ is not a JSON object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string())
          throw Error(path + ": __metadata__ entry '" + m.key() + "' is not a string");
        st.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string p = path + ": tensor '" + name + "': ";
    if (!v.is_object()) throw Error(p + "entry is not a JSON object");
    for (const char* field : {"dtype", "shape", "data_offsets"})
      if (!v.contains(field)) throw Error(p + "missing field '" + field + "'");
    StTensor t;
    if (!v["dtype"].is_string()) throw Error(p + "dtype is not a string");
    t.dtype = v["dtype"].get<std::string>();
    size_t es = st_dtype_size(t.dtype);
    if (es == 0) throw Error(p + "unknown dtype '" + t.dtype + "' (known: " + dtype_list() + ")");
    const nlohmann::json& shape = v["shape"];
    if (!shape.is_array()) throw Error(p + "shape is not an array");
    for (const auto& d : shape) {
      if (!d.is_number_unsigned() || d.get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max()))
        throw Error(p + "shape " + shape.dump() + " has an entry that is not a non-negative integer");
      t.shape.push_back(int64_t(d.get<uint64_t>()));
    }
    const nlohmann::json& off = v["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      throw Error(p + "data_offsets " + off.dump() + " is not a pair of non-negative integers");
    uint64_t begin = off[0].get<uint64_t>(), end = off[1].get<uint64_t>();
    if (begin > end) throw Error(p + "data_offsets " + off.dump() + " begin after end");
    if (end > data_len)
      throw Error(p + "data_offsets " + off.dump() + " beyond the data buffer (" + std::to_string(data_len) +
                  " bytes); truncated file?");
    uint64_t bytes = 0;
    if (!byte_size(t.shape, es, bytes)) throw Error(p + "shape " + shape.dump() + " overflows");
    if (end - begin != bytes)
      throw Error(p + "data_offsets " + off.dump() + " span " + std::to_string(end - begin) + " bytes but shape " +
                  shape.dump() + " of " + t.dtype + " needs " + std::to_string(bytes));
    t.data.assign(buf.begin() + std::ptrdiff_t(data_start + begin), buf.begin() + std::ptrdiff_t(data_start + end));
    auto ins = st.tensors.emplace(name, std::move(t));
    spans.push_back({begin, end, &ins.first->first});
  }
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  const Span* prev = nullptr;
  for (const Span& s : spans) {
    if (s.begin == s.end) continue;  // empty tensors occupy nothing
    if (prev && s.begin < prev->end)
      throw Error(path + ": tensor '" + *s.name + "' [" + std::to_string(s.begin) + ", " + std::to_string(s.end) +
                  ") overlaps tensor '" + *prev->name + "' [" + std::to_string(prev->begin) + ", " +
                  std::to_string(prev->end) + ")");
    if (!prev || s.end > prev->end) prev = &s;
  }
  return st;
}

std::vector<uint8_t> serialize_safetensors(const SafeTensors& st) { return serialize_impl(st, src_name(st.source)); }

void write_safetensors(const std::string& path, const SafeTensors& st) {
  std::vector<uint8_t> bytes = serialize_impl(st, path);
  const std::string tmp = path + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) throw Error(path + ": cannot write " + tmp + ": " + std::strerror(errno));
  bool ok = std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size();
  int err = ok ? 0 : errno;
  if (ok && std::fflush(f) != 0) ok = false, err = errno;
#if defined(__unix__) || defined(__APPLE__)
  if (ok && ::fsync(fileno(f)) != 0) ok = false, err = errno;
#endif
  if (std::fclose(f) != 0 && ok) ok = false, err = errno;
  if (!ok) {
    std::remove(tmp.c_str());
    throw Error(path + ": writing " + tmp + " failed: " + std::strerror(err));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::remove(tmp.c_str());
    throw Error(path + ": cannot rename " + tmp + " over it: " + ec.message());
  }
}

}  // namespace vkqat::nn

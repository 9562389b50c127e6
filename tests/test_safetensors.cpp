// safetensors reader/writer: round trip, a file laid out byte for byte like the
// reference (PyTorch/Rust) writer's output, and every malformed case.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#if defined(__unix__)
#include <unistd.h>
#endif

#include "backend/error.h"
#include "nn/safetensors.h"

namespace fs = std::filesystem;
using namespace vkqat;
using namespace vkqat::nn;

namespace {

using Bytes = std::vector<uint8_t>;

struct TempDir {
  fs::path path;
  TempDir() {
    static std::atomic<int> counter{0};
    auto stamp = std::chrono::steady_clock::now().time_since_epoch().count();
    path = fs::temp_directory_path() / ("vkqat_test_st_" + std::to_string(stamp) + "_" + std::to_string(counter++));
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

void write_raw(const std::string& path, const Bytes& b) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
  REQUIRE(f.good());
}

Bytes read_raw(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return Bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

// 8-byte little-endian length, header (space-padded to a multiple of 8 if pad), data.
Bytes st_file(std::string header, const Bytes& data, bool pad = true) {
  if (pad) header.append((8 - header.size() % 8) % 8, ' ');
  Bytes b;
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) b.push_back(uint8_t(n >> (8 * i)));
  b.insert(b.end(), header.begin(), header.end());
  b.insert(b.end(), data.begin(), data.end());
  return b;
}

template <class T>
void append(Bytes& b, const std::vector<T>& v) {
  size_t at = b.size();
  b.resize(at + v.size() * sizeof(T));
  std::memcpy(b.data() + at, v.data(), v.size() * sizeof(T));
}

void expect_error(const std::function<void()>& fn, const std::vector<std::string>& parts) {
  try {
    fn();
    FAIL("no vkqat::Error thrown; expected one mentioning " << parts.front());
  } catch (const Error& e) {
    std::string msg = e.what();
    for (const auto& p : parts) CHECK_MESSAGE(msg.find(p) != std::string::npos, "'" << msg << "' lacks '" << p << "'");
  }
}

}  // namespace

TEST_SUITE("safetensors") {

TEST_CASE("round trip keeps every tensor, dtype, shape and metadata; layout is aligned") {
  TempDir d;
  SafeTensors st;
  std::vector<float> w(3 * 2 * 3 * 3);
  for (size_t i = 0; i < w.size(); ++i) w[i] = float(i) * 0.25f - 3.f;
  st.add_f32("conv1.weight", {3, 2, 3, 3}, w);
  st.add_f32("bn1.weight", {3}, {1.f, -2.5f, 1e-30f});
  st.add_f32("scalar", {}, {42.f});
  st.add_f32("empty", {0, 4}, std::vector<float>{});
  st.add_i64("bn1.num_batches_tracked", {}, {123456789012345});
  StTensor u8;
  u8.dtype = "U8";
  u8.shape = {5};
  u8.data = {1, 2, 3, 4, 5};  // odd size: must not misalign anything
  st.tensors["aux.mask"] = u8;
  StTensor h16;
  h16.dtype = "F16";
  h16.shape = {3};
  h16.data = {0, 0x3c, 0, 0xc0, 0xff, 0x7b};
  st.tensors["half"] = h16;
  st.metadata["model"] = "resnet20";
  st.metadata["mean"] = "[0.2860]";

  const std::string path = d / "ckpt.safetensors";
  write_safetensors(path, st);
  CHECK(!fs::exists(path + ".tmp"));
  SafeTensors r = read_safetensors(path);
  CHECK(r.source == path);
  CHECK(r.metadata == st.metadata);
  REQUIRE(r.tensors.size() == st.tensors.size());
  for (const auto& [name, t] : st.tensors) {
    CAPTURE(name);
    REQUIRE(r.has(name));
    CHECK(r.at(name).dtype == t.dtype);
    CHECK(r.at(name).shape == t.shape);
    CHECK(r.at(name).data == t.data);
  }
  CHECK(r.get_f32("conv1.weight") == w);
  CHECK(r.get_f32("conv1.weight", {3, 2, 3, 3}) == w);
  CHECK(r.get_f32("scalar") == std::vector<float>{42.f});
  CHECK(r.get_f32("empty").empty());
  CHECK(r.get_i64("bn1.num_batches_tracked") == std::vector<int64_t>{123456789012345});

  // Layout: header a multiple of 8, every tensor at an offset aligned to its element size,
  // tensors packed without gaps up to the end of the file.
  Bytes raw = read_raw(path);
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t(raw[size_t(i)]) << (8 * i);
  CHECK(n % 8 == 0);
  CHECK(raw[8] == '{');
  std::string header(raw.begin() + 8, raw.begin() + 8 + std::ptrdiff_t(n));
  CHECK(header.rfind("{\"__metadata__\":", 0) == 0);
  uint64_t total = 0;
  for (const auto& [name, t] : st.tensors) {
    CAPTURE(name);
    std::string key = "\"" + name + "\":{\"dtype\":\"" + t.dtype + "\"";
    size_t at = header.find(key);
    REQUIRE(at != std::string::npos);
    size_t off = header.find("\"data_offsets\":[", at);
    uint64_t begin = std::stoull(header.substr(off + 16));
    CHECK(begin % st_dtype_size(t.dtype) == 0);
    total += t.data.size();
  }
  CHECK(raw.size() == 8 + n + total);

  // Deterministic, and overwriting an existing file works.
  CHECK(serialize_safetensors(st) == raw);
  st.add_f32("bn1.weight", {3}, {0.f, 0.f, 0.f});
  write_safetensors(path, st);
  CHECK(read_safetensors(path).get_f32("bn1.weight") == std::vector<float>{0.f, 0.f, 0.f});
}

TEST_CASE("a file in the exact layout PyTorch's safetensors writes") {
  // safetensors.torch.save_file({"conv1.weight": ..., "bn1.running_mean": ...,
  //   "bn1.num_batches_tracked": tensor(7)}, f, metadata={"format": "pt"}) produces:
  // __metadata__ first; tensors sorted by descending dtype (I64 before F32), then name;
  // compact JSON; header space-padded to a multiple of 8.
  const std::string header =
      "{\"__metadata__\":{\"format\":\"pt\"},"
      "\"bn1.num_batches_tracked\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[0,8]},"
      "\"bn1.running_mean\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]},"
      "\"conv1.weight\":{\"dtype\":\"F32\",\"shape\":[2,1,1,3],\"data_offsets\":[16,40]}}";
  Bytes data;
  append(data, std::vector<int64_t>{7});
  append(data, std::vector<float>{0.5f, -0.25f});
  append(data, std::vector<float>{1, 2, 3, 4, 5, 6});
  Bytes file = st_file(header, data);
  CHECK((file.size() - data.size() - 8) % 8 == 0);
  CHECK(file[8 + header.size()] == ' ');  // this header needs padding

  TempDir d;
  const std::string path = d / "torch.safetensors";
  write_raw(path, file);
  SafeTensors st = read_safetensors(path);
  CHECK(st.metadata.at("format") == "pt");
  CHECK(st.tensors.size() == 3u);
  CHECK(st.at("bn1.num_batches_tracked").shape.empty());
  CHECK(st.at("bn1.num_batches_tracked").numel() == 1);
  CHECK(st.get_i64("bn1.num_batches_tracked") == std::vector<int64_t>{7});
  CHECK(st.get_f32("bn1.running_mean") == std::vector<float>{0.5f, -0.25f});
  CHECK(st.at("conv1.weight").shape == std::vector<int64_t>{2, 1, 1, 3});
  CHECK(st.get_f32("conv1.weight") == std::vector<float>{1, 2, 3, 4, 5, 6});

  // Our writer reproduces the reference bytes exactly.
  CHECK(serialize_safetensors(st) == file);
  const std::string again = d / "again.safetensors";
  write_safetensors(again, st);
  CHECK(read_raw(again) == file);

  // Reading tolerates a tensor order that is not the writer's (older files: by name).
  const std::string by_name =
      "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]},"
      "\"b\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]}}";
  Bytes data2;
  append(data2, std::vector<int64_t>{-3});
  append(data2, std::vector<float>{2.f});
  write_raw(path, st_file(by_name, data2, false));  // unpadded header is legal too
  SafeTensors st2 = read_safetensors(path);
  CHECK(st2.get_f32("a") == std::vector<float>{2.f});
  CHECK(st2.get_i64("b") == std::vector<int64_t>{-3});
  CHECK(st2.metadata.empty());
}

TEST_CASE("malformed safetensors files give errors naming the file and tensor") {
  TempDir d;
  const std::string path = d / "bad.safetensors";
  auto read = [&] { read_safetensors(path); };
  auto t = [](const std::string& name, const std::string& body) { return "\"" + name + "\":" + body; };
  const Bytes eight(8, 0);

  SUBCASE("missing file") { expect_error([&] { read_safetensors(d / "nope.safetensors"); }, {"nope.safetensors", "not found"}); }
  SUBCASE("too short") {
    write_raw(path, {1, 2, 3});
    expect_error(read, {path, "too short"});
  }
  SUBCASE("header longer than file") {
    Bytes b = st_file("{}", {});
    b[0] = 200;
    write_raw(path, b);
    expect_error(read, {path, "exceeds the file size"});
  }
  SUBCASE("absurd header length") {
    Bytes b = st_file("{}", {});
    b[5] = 1;  // 2^40
    write_raw(path, b);
    expect_error(read, {path, "absurd"});
  }
  SUBCASE("not JSON") {
    write_raw(path, st_file("{\"a\": {\"dtype\": ", eight));
    expect_error(read, {path, "JSON"});
  }
  SUBCASE("not an object") {
    write_raw(path, st_file("[1, 2]", {}));
    expect_error(read, {path});
  }
  SUBCASE("missing field") {
    write_raw(path, st_file("{" + t("w", R"({"dtype":"F32","data_offsets":[0,8]})") + "}", eight));
    expect_error(read, {path, "'w'", "shape"});
  }
  SUBCASE("missing data_offsets") {
    write_raw(path, st_file("{" + t("w", R"({"dtype":"F32","shape":[2]})") + "}", eight));
    expect_error(read, {path, "'w'", "data_offsets"});
  }
  SUBCASE("unknown dtype") {
    write_raw(path, st_file("{" + t("w", R"({"dtype":"F7","shape":[2],"data_offsets":[0,8]})") + "}", eight));
    expect_error(read, {path, "'w'", "F7"});
  }
  SUBCASE("negative shape") {
    write_raw(path, st_file("{" + t("w", R"({"dtype":"F32","shape":[-2],"data_offsets":[0,8]})") + "}", eight));
    expect_error(read, {path, "'w'", "shape"});
  }
  SUBCASE("offsets beyond data") {
    write_raw(path, st_file("{" + t("w", R"({"dtype":"F32","shape":[4],"data_offsets":[0,16]})") + "}", eight));
    expect_error(read, {path, "'w'", "beyond"});
  }
  SUBCASE("offsets inconsistent with shape") {
    write_raw(path, st_file("{" + t("w", R"({"dtype":"F32","shape":[3],"data_offsets":[0,8]})") + "}", eight));
    expect_error(read, {path, "'w'", "needs 12"});
  }
  SUBCASE("begin after end") {
    write_raw(path, st_file("{" + t("w", R"({"dtype":"U8","shape":[0],"data_offsets":[8,0]})") + "}", eight));
    expect_error(read, {path, "'w'"});
  }
  SUBCASE("overlapping tensors") {
    write_raw(path, st_file("{" + t("a", R"({"dtype":"F32","shape":[2],"data_offsets":[0,8]})") + "," +
                                t("b", R"({"dtype":"F32","shape":[1],"data_offsets":[4,8]})") + "}",
                            eight));
    expect_error(read, {path, "overlaps", "'a'", "'b'"});
  }
  SUBCASE("duplicate tensor name") {
    write_raw(path, st_file("{" + t("a", R"({"dtype":"F32","shape":[1],"data_offsets":[0,4]})") + "," +
                                t("a", R"({"dtype":"F32","shape":[1],"data_offsets":[4,8]})") + "}",
                            eight));
    expect_error(read, {path, "'a'", "twice"});
  }
  SUBCASE("non-string metadata") {
    write_raw(path, st_file(R"({"__metadata__":{"epochs":3}})", {}));
    expect_error(read, {path, "__metadata__", "epochs"});
  }
  SUBCASE("accessors name the file and tensor") {
    write_raw(path, st_file("{" + t("w", R"({"dtype":"I32","shape":[2],"data_offsets":[0,8]})") + "}", eight));
    SafeTensors st = read_safetensors(path);
    expect_error([&] { st.get_f32("w"); }, {path, "'w'", "I32"});
    expect_error([&] { st.get_f32("fc.weight"); }, {path, "'fc.weight'", "not found"});
    expect_error([&] { st.get_i64("w"); }, {path, "'w'"});
  }
}

TEST_CASE("write errors: unwritable directory, invalid tensors; never a partial file") {
  TempDir d;
  SafeTensors st;
  st.add_f32("w", {2}, {1.f, 2.f});
  const std::string missing = d / "no/such/dir/ckpt.safetensors";
  expect_error([&] { write_safetensors(missing, st); }, {missing});
  CHECK(!fs::exists(missing));

  // An existing file stays intact when the new content is rejected.
  const std::string path = d / "ckpt.safetensors";
  write_safetensors(path, st);
  Bytes before = read_raw(path);
  SafeTensors bad = st;
  bad.tensors["x"] = StTensor{"F32", {3}, Bytes(8, 0)};
  expect_error([&] { write_safetensors(path, bad); }, {path, "'x'", "needs 12"});
  bad.tensors["x"] = StTensor{"Q4", {3}, Bytes(3, 0)};
  expect_error([&] { write_safetensors(path, bad); }, {path, "'x'", "Q4"});
  CHECK(read_raw(path) == before);
  CHECK(!fs::exists(path + ".tmp"));
  expect_error([&] { st.add_f32("v", {3}, std::vector<float>{1.f}); }, {"'v'"});

#if defined(__unix__)
  // A read-only directory (meaningless for root, who may write anyway).
  if (::geteuid() != 0) {
    fs::path ro = d.path / "ro";
    fs::create_directories(ro);
    fs::permissions(ro, fs::perms::owner_read | fs::perms::owner_exec);
    const std::string p = (ro / "c.safetensors").string();
    expect_error([&] { write_safetensors(p, st); }, {p});
    fs::permissions(ro, fs::perms::owner_all);
  }
#endif
}

}  // TEST_SUITE

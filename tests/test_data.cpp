// Dataset readers (IDX, CIFAR-10) and the batch loader. Pure CPU: no Vulkan context.
#include <doctest/doctest.h>
#include <zlib.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "backend/error.h"
#include "nn/data/dataset.h"
#include "nn/data/loader.h"

namespace fs = std::filesystem;
using namespace vkqat;
using namespace vkqat::nn;

namespace {

struct TempDir {
  fs::path path;
  TempDir() {
    static std::atomic<int> counter{0};
    auto stamp = std::chrono::steady_clock::now().time_since_epoch().count();
    path = fs::temp_directory_path() /
           ("vkqat_test_data_" + std::to_string(stamp) + "_" + std::to_string(counter++));
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

using Bytes = std::vector<uint8_t>;

void write_raw(const std::string& path, const Bytes& b) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
  REQUIRE(f.good());
}

void write_gz(const std::string& path, const Bytes& b) {
  gzFile f = gzopen(path.c_str(), "wb");
  REQUIRE(f != nullptr);
  REQUIRE(gzwrite(f, b.data(), unsigned(b.size())) == int(b.size()));
  REQUIRE(gzclose(f) == Z_OK);
}

Bytes read_raw(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return Bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

void put_be32(Bytes& b, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) b.push_back(uint8_t(v >> s));
}

Bytes idx_images(uint32_t n, uint32_t h, uint32_t w, const Bytes& pixels, uint32_t magic = 2051) {
  Bytes b;
  put_be32(b, magic);
  put_be32(b, n);
  put_be32(b, h);
  put_be32(b, w);
  b.insert(b.end(), pixels.begin(), pixels.end());
  return b;
}

Bytes idx_labels(const Bytes& labels, uint32_t magic = 2049, int count = -1) {
  Bytes b;
  put_be32(b, magic);
  put_be32(b, count < 0 ? uint32_t(labels.size()) : uint32_t(count));
  b.insert(b.end(), labels.begin(), labels.end());
  return b;
}

Bytes pattern(size_t n, int mul = 7, int add = 3) {
  Bytes b(n);
  for (size_t i = 0; i < n; ++i) b[i] = uint8_t((i * mul + add) & 0xff);
  return b;
}

// fn() must throw vkqat::Error whose message contains every string in `parts`.
void expect_error(const std::function<void()>& fn, const std::vector<std::string>& parts) {
  try {
    fn();
    FAIL("no vkqat::Error thrown; expected one mentioning " << parts.front());
  } catch (const Error& e) {
    std::string msg = e.what();
    for (const auto& p : parts) CHECK_MESSAGE(msg.find(p) != std::string::npos, "'" << msg << "' lacks '" << p << "'");
  }
}

// A small IDX dataset of 5 train and 3 test images of 3x4.
void make_idx_dir(const TempDir& d, bool gz) {
  auto w = gz ? write_gz : write_raw;
  std::string ext = gz ? ".gz" : "";
  w(d / ("train-images-idx3-ubyte" + ext), idx_images(5, 3, 4, pattern(5 * 12)));
  w(d / ("train-labels-idx1-ubyte" + ext), idx_labels({0, 9, 3, 3, 7}));
  w(d / ("t10k-images-idx3-ubyte" + ext), idx_images(3, 3, 4, pattern(3 * 12, 5, 1)));
  w(d / ("t10k-labels-idx1-ubyte" + ext), idx_labels({1, 2, 8}));
}

Dataset synthetic(int n, int c, int h, int w, const std::string& name = "synthetic") {
  Dataset d;
  d.n = n;
  d.channels = c;
  d.height = h;
  d.width = w;
  d.classes = 10;
  d.name = name;
  d.images = pattern(size_t(n) * c * h * w, 13, 1);
  d.labels.resize(size_t(n));
  for (int i = 0; i < n; ++i) d.labels[size_t(i)] = uint8_t(i % 10);
  d.mean = {0.25f, 0.5f, 0.75f};
  d.std = {0.5f, 0.25f, 0.125f};
  return d;
}

std::vector<Batch> run_epoch(BatchLoader& L, int epoch) {
  L.start_epoch(epoch);
  std::vector<Batch> out;
  Batch b;
  while (L.next(b)) out.push_back(b);
  CHECK(b.size == 0);
  return out;
}

bool same(const std::vector<Batch>& a, const std::vector<Batch>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i].x != b[i].x || a[i].y != b[i].y || a[i].index != b[i].index || a[i].size != b[i].size) return false;
  return true;
}

float norm(uint8_t v, float mean, float std) { return (float(v) / 255.0f - mean) / std; }

}  // namespace

TEST_SUITE("data") {

TEST_CASE("IDX raw and gzip files load with the right values") {
  for (bool gz : {false, true}) {
    CAPTURE(gz);
    TempDir d;
    make_idx_dir(d, gz);
    Dataset tr = load_dataset("mnist", d.path.string(), true);
    CHECK(tr.n == 5);
    CHECK(tr.channels == 1);
    CHECK(tr.height == 3);
    CHECK(tr.width == 4);
    CHECK(tr.classes == 10);
    CHECK(tr.name == "mnist");
    CHECK(tr.images == pattern(60));
    CHECK(tr.labels == Bytes{0, 9, 3, 3, 7});
    CHECK(tr.mean[0] == doctest::Approx(0.1307f));
    CHECK(tr.std[2] == doctest::Approx(0.3081f));
    Dataset te = load_dataset("fashion-mnist", d.path.string(), false);
    CHECK(te.n == 3);
    CHECK(te.images == pattern(36, 5, 1));
    CHECK(te.labels == Bytes{1, 2, 8});
    CHECK(te.mean[0] == doctest::Approx(0.2860f));
    CHECK(te.std[0] == doctest::Approx(0.3530f));
    Dataset head = first_n(tr, 2);
    CHECK(head.n == 2);
    CHECK(head.images == pattern(24));
    CHECK(head.labels == Bytes{0, 9});
  }
}

TEST_CASE("IDX malformed files give errors naming the file") {
  TempDir d;
  const std::string dir = d.path.string();
  const std::string img = d / "train-images-idx3-ubyte", lab = d / "train-labels-idx1-ubyte";
  auto load = [&] { load_dataset("mnist", dir, true); };

  SUBCASE("directory missing") {
    expect_error([&] { load_dataset("mnist", dir + "/nope", true); }, {dir + "/nope", "does not exist"});
  }
  SUBCASE("files missing (wrong directory)") { expect_error(load, {"train-images-idx3-ubyte", dir}); }
  SUBCASE("not a directory") {
    write_raw(d / "file", {1, 2, 3});
    expect_error([&] { load_dataset("mnist", d / "file", true); }, {d / "file", "not a directory"});
  }
  SUBCASE("label file missing") {
    write_raw(img, idx_images(2, 2, 2, pattern(8)));
    expect_error(load, {"train-labels-idx1-ubyte", "not found"});
  }
  SUBCASE("wrong magic: images and labels swapped") {
    write_raw(img, idx_labels({1, 2}));
    write_raw(lab, idx_images(2, 2, 2, pattern(8)));
    expect_error(load, {img, "magic", "label file"});
  }
  SUBCASE("wrong magic in labels") {
    write_raw(img, idx_images(2, 2, 2, pattern(8)));
    write_raw(lab, idx_labels({1, 2}, 2051));
    expect_error(load, {lab, "magic"});
  }
  SUBCASE("header too short") {
    write_raw(img, {0, 0, 8, 3, 0, 0});
    write_raw(lab, idx_labels({1, 2}));
    expect_error(load, {img, "too short"});
  }
  SUBCASE("truncated images") {
    Bytes b = idx_images(3, 2, 2, pattern(12));
    b.resize(b.size() - 1);
    write_raw(img, b);
    write_raw(lab, idx_labels({1, 2, 3}));
    expect_error(load, {img, "truncated"});
  }
  SUBCASE("trailing bytes") {
    write_raw(img, idx_images(2, 2, 2, pattern(9)));
    write_raw(lab, idx_labels({1, 2}));
    expect_error(load, {img, "trailing"});
  }
  SUBCASE("truncated labels") {
    write_raw(img, idx_images(3, 2, 2, pattern(12)));
    write_raw(lab, idx_labels({1, 2}, 2049, 3));
    expect_error(load, {lab, "truncated"});
  }
  SUBCASE("truncated gzip stream") {
    write_gz(img + ".gz", idx_images(50, 8, 8, pattern(50 * 64, 97, 5)));
    Bytes gz = read_raw(img + ".gz");
    gz.resize(gz.size() / 2);
    write_raw(img + ".gz", gz);
    write_raw(lab, idx_labels(Bytes(50, 1)));
    expect_error(load, {img + ".gz"});
  }
  SUBCASE("image/label count mismatch") {
    write_raw(img, idx_images(3, 2, 2, pattern(12)));
    write_raw(lab, idx_labels({1, 2}));
    expect_error(load, {img, lab, "3 images", "2 labels"});
  }
  SUBCASE("label out of range") {
    write_raw(img, idx_images(3, 2, 2, pattern(12)));
    write_raw(lab, idx_labels({1, 10, 2}));
    expect_error(load, {lab, "label 10", "out of range"});
  }
  SUBCASE("zero-sized images") {
    write_raw(img, idx_images(3, 0, 2, {}));
    write_raw(lab, idx_labels({1, 2, 3}));
    expect_error(load, {img, "image size"});
  }
  SUBCASE("unknown dataset name") { expect_error([&] { load_dataset("imagenet", dir, true); }, {"imagenet"}); }
  SUBCASE("default mnist directory missing asks for --data-dir") {
    if (fs::exists("/usr/share/datasets/mnist")) {
      MESSAGE("skipped: /usr/share/datasets/mnist exists");
    } else {
      expect_error([] { load_dataset("mnist", "", true); }, {"/usr/share/datasets/mnist", "--data-dir"});
    }
  }
}

TEST_CASE("CIFAR-10 binary batches load, from the directory or its subdirectory") {
  auto record = [](uint8_t label, int seed) {
    Bytes r{label};
    Bytes px = pattern(3072, seed, seed * 3);
    r.insert(r.end(), px.begin(), px.end());
    return r;
  };
  for (bool sub : {false, true}) {
    CAPTURE(sub);
    TempDir d;
    fs::path base = sub ? d.path / "cifar-10-batches-bin" : d.path;
    fs::create_directories(base);
    for (int i = 1; i <= 5; ++i) {
      Bytes f = record(uint8_t(i), i);
      Bytes g = record(uint8_t(9 - i), 10 + i);
      f.insert(f.end(), g.begin(), g.end());
      write_raw((base / ("data_batch_" + std::to_string(i) + ".bin")).string(), f);
    }
    Bytes t = record(4, 21);
    write_raw((base / "test_batch.bin").string(), t);

    Dataset tr = load_dataset("cifar10", d.path.string(), true);
    CHECK(tr.n == 10);
    CHECK(tr.channels == 3);
    CHECK(tr.height == 32);
    CHECK(tr.width == 32);
    CHECK(tr.labels == Bytes{1, 8, 2, 7, 3, 6, 4, 5, 5, 4});
    REQUIRE(tr.images.size() == 10 * 3072u);
    Bytes third(tr.images.begin() + 2 * 3072, tr.images.begin() + 3 * 3072);
    CHECK(third == pattern(3072, 2, 6));
    CHECK(tr.mean[1] == doctest::Approx(0.4822f));
    CHECK(tr.std[2] == doctest::Approx(0.2616f));
    Dataset te = load_dataset("cifar10", d.path.string(), false);
    CHECK(te.n == 1);
    CHECK(te.labels == Bytes{4});
    CHECK(Bytes(te.images.begin(), te.images.end()) == pattern(3072, 21, 63));
  }
}

TEST_CASE("CIFAR-10 malformed files give errors naming the file") {
  TempDir d;
  const std::string test = d / "test_batch.bin";
  SUBCASE("missing") { expect_error([&] { load_dataset("cifar10", d.path.string(), false); }, {test, "not found"}); }
  SUBCASE("missing one training batch") {
    for (int i = 1; i <= 4; ++i) write_raw(d / ("data_batch_" + std::to_string(i) + ".bin"), Bytes(3073, 1));
    expect_error([&] { load_dataset("cifar10", d.path.string(), true); }, {"data_batch_5.bin", "not found"});
  }
  SUBCASE("truncated") {
    write_raw(test, Bytes(2 * 3073 - 5, 1));
    expect_error([&] { load_dataset("cifar10", d.path.string(), false); }, {test, "3073"});
  }
  SUBCASE("empty") {
    write_raw(test, {});
    expect_error([&] { load_dataset("cifar10", d.path.string(), false); }, {test});
  }
  SUBCASE("label out of range") {
    Bytes b(2 * 3073, 0);
    b[3073] = 10;
    write_raw(test, b);
    expect_error([&] { load_dataset("cifar10", d.path.string(), false); }, {test, "label 10", "record 1"});
  }
}

TEST_CASE("loader normalizes per channel and covers eval images once, in order") {
  Dataset d = synthetic(10, 3, 2, 3);
  LoaderOptions opt;
  opt.prefetch = false;
  BatchLoader L(d, 4, false, 123, opt);
  CHECK(L.batches_per_epoch() == 3);
  auto batches = run_epoch(L, 0);
  REQUIRE(batches.size() == 3);
  CHECK(batches[0].size == 4);
  CHECK(batches[2].size == 2);
  CHECK(batches[2].x.size() == 2 * 18u);
  CHECK(batches[2].y.size() == 2u);
  uint32_t next = 0;
  for (const Batch& b : batches) {
    for (int i = 0; i < b.size; ++i) {
      CHECK(b.index[size_t(i)] == next);
      CHECK(b.y[size_t(i)] == next % 10);
      for (int c = 0; c < 3; ++c)
        for (int k = 0; k < 6; ++k) {
          uint8_t raw = d.images[size_t(next) * 18 + size_t(c) * 6 + size_t(k)];
          float want = norm(raw, d.mean[size_t(c)], d.std[size_t(c)]);
          CHECK(b.x[size_t(i) * 18 + size_t(c) * 6 + size_t(k)] == want);
        }
      ++next;
    }
  }
  CHECK(next == 10);
  // Explicit values: raw 0 -> -mean/std, raw 255 -> (1-mean)/std.
  Dataset z = synthetic(1, 1, 1, 2);
  z.images = {0, 255};
  z.mean = {0.2860f, 0.2860f, 0.2860f};
  z.std = {0.3530f, 0.3530f, 0.3530f};
  BatchLoader Z(z, 1, false, 0, opt);
  auto zb = run_epoch(Z, 0);
  CHECK(zb[0].x[0] == doctest::Approx(-0.2860 / 0.3530).epsilon(1e-6));
  CHECK(zb[0].x[1] == doctest::Approx((1 - 0.2860) / 0.3530).epsilon(1e-6));
  // A subset: the first 7 images.
  opt.limit = 7;
  BatchLoader S(d, 4, false, 0, opt);
  CHECK(S.size() == 7);
  auto sb = run_epoch(S, 0);
  REQUIRE(sb.size() == 2);
  CHECK(sb[1].size == 3);
  CHECK(sb[1].index.back() == 6u);
}

TEST_CASE("training loader: shuffles per epoch, drops the partial batch, is deterministic") {
  Dataset d = synthetic(50, 1, 5, 5, "fashion-mnist");
  auto make = [&](uint64_t seed, bool prefetch) {
    LoaderOptions o;
    o.prefetch = prefetch;
    return std::make_unique<BatchLoader>(d, 8, true, seed, o);
  };
  auto A = make(7, false);
  CHECK(A->batches_per_epoch() == 6);  // 50 / 8, last 2 images dropped
  CHECK(A->flip());
  CHECK(A->pad() == 2);
  std::vector<std::vector<Batch>> epochs;
  for (int e = 0; e < 3; ++e) epochs.push_back(run_epoch(*A, e));
  for (auto& ep : epochs) {
    REQUIRE(ep.size() == 6u);
    std::set<uint32_t> seen;
    for (auto& b : ep) {
      CHECK(b.size == 8);
      CHECK(b.x.size() == 8 * 25u);
      for (int i = 0; i < 8; ++i) {
        seen.insert(b.index[size_t(i)]);
        CHECK(b.y[size_t(i)] == d.labels[b.index[size_t(i)]]);
      }
    }
    CHECK(seen.size() == 48u);  // distinct images
  }
  CHECK(epochs[0][0].index != epochs[1][0].index);  // a new permutation every epoch

  // Same seed: identical batches, with and without the prefetch thread, in any epoch order.
  auto B = make(7, true);
  CHECK(same(run_epoch(*B, 2), epochs[2]));
  CHECK(same(run_epoch(*B, 0), epochs[0]));
  CHECK(same(run_epoch(*B, 1), epochs[1]));
  auto C = make(8, true);
  CHECK(!same(run_epoch(*C, 0), epochs[0]));

  // Resume mid-epoch from the exposed state.
  auto R = make(7, true);
  R->start_epoch(1);
  Batch b;
  R->next(b);
  R->next(b);
  CHECK(R->epoch() == 1);
  CHECK(R->position() == 2);
  CHECK(R->seed() == 7u);
  auto R2 = make(7, false);
  R2->start_epoch(R->epoch(), R->position());
  for (int k = 2; k < 6; ++k) {
    Batch x, y;
    REQUIRE(R->next(x));
    REQUIRE(R2->next(y));
    CHECK(x.x == epochs[1][size_t(k)].x);
    CHECK(y.x == epochs[1][size_t(k)].x);
  }
  CHECK(!R->next(b));
  CHECK(!R2->next(b));

  // Abandoning an epoch midway (prefetch in flight) and restarting is safe.
  auto P = make(7, true);
  P->start_epoch(0);
  P->next(b);
  CHECK(same(run_epoch(*P, 0), epochs[0]));
}

TEST_CASE("random crop with zero padding and horizontal flip are exact") {
  // One 3x4 image with distinct non-zero pixels, repeated; pad 1 gives 3x3 crop offsets.
  const int H = 3, W = 4, p = 1;
  Dataset d = synthetic(40, 1, H, W);
  for (int i = 0; i < 40; ++i)
    for (int k = 0; k < H * W; ++k) d.images[size_t(i) * 12 + size_t(k)] = uint8_t(10 + 17 * k);
  auto candidate = [&](int dy, int dx, bool f) {
    std::vector<float> out(size_t(H * W));
    for (int y = 0; y < H; ++y)
      for (int x = 0; x < W; ++x) {
        // zero-pad to (H+2p)x(W+2p), crop at (dy, dx), then mirror the crop
        int cx = f ? W - 1 - x : x;
        int py = y + dy, px = cx + dx;  // in padded coordinates
        bool inside = py >= p && py < H + p && px >= p && px < W + p;
        uint8_t raw = inside ? uint8_t(10 + 17 * ((py - p) * W + (px - p))) : uint8_t(0);
        out[size_t(y * W + x)] = norm(raw, d.mean[0], d.std[0]);
      }
    return out;
  };
  for (bool flip : {true, false}) {
    CAPTURE(flip);
    LoaderOptions o;
    o.pad = p;
    o.flip = flip;
    BatchLoader L(d, 10, true, 99, o);
    std::set<int> hits;
    int flips = 0, total = 0;
    for (int e = 0; e < 20; ++e) {
      for (const Batch& b : run_epoch(L, e)) {
        for (int i = 0; i < b.size; ++i) {
          std::vector<float> got(b.x.begin() + i * 12, b.x.begin() + (i + 1) * 12);
          int match = -1;
          for (int c = 0; c < 18 && match < 0; ++c)
            if (got == candidate(c / 6, (c / 2) % 3, c % 2)) match = c;
          REQUIRE_MESSAGE(match >= 0, "batch output is no crop/flip of the image");
          hits.insert(match);
          flips += match % 2;
          ++total;
        }
      }
    }
    if (flip) {
      CHECK(hits.size() == 18u);  // every offset and both flips occur
      CHECK(flips > total * 0.4);
      CHECK(flips < total * 0.6);
    } else {
      CHECK(hits.size() == 9u);
      CHECK(flips == 0);
    }
  }
  // Padding is 0 in raw pixel space: an all-black border maps to -mean/std.
  LoaderOptions o;
  o.pad = 4;
  BatchLoader L(d, 40, true, 5, o);
  bool saw_border = false;
  for (const Batch& b : run_epoch(L, 0))
    for (float v : b.x)
      if (v == norm(0, d.mean[0], d.std[0])) saw_border = true;
  CHECK(saw_border);
}

TEST_CASE("loader defaults and argument errors") {
  Dataset m = synthetic(20, 1, 28, 28, "mnist");
  BatchLoader a(m, 4, true, 0);
  CHECK(!a.flip());  // digits are not mirror-symmetric
  CHECK(a.pad() == 2);
  Dataset c = synthetic(20, 3, 32, 32, "cifar10");
  BatchLoader b(c, 4, true, 0);
  CHECK(b.flip());
  CHECK(b.pad() == 4);
  BatchLoader e(c, 4, false, 0);
  CHECK(!e.augment());
  Batch x;
  expect_error([&] { e.next(x); }, {"start_epoch"});
  expect_error([&] { BatchLoader(c, 32, true, 0); }, {"fewer than one batch"});
  expect_error([&] { BatchLoader(c, 0, true, 0); }, {"batch size"});
}

TEST_CASE("real Fashion-MNIST test set") {
  const std::string dir = "/usr/share/datasets/fashion-mnist";
  if (!fs::is_directory(dir)) {
    MESSAGE("skipped: " << dir << " missing (install dataset-fashion-mnist)");
    return;
  }
  Dataset d = load_dataset("fashion-mnist", "", false);
  CHECK(d.n == 10000);
  CHECK(d.channels == 1);
  CHECK(d.height == 28);
  CHECK(d.width == 28);
  CHECK(d.images.size() == 10000u * 784u);
  std::vector<int> count(10, 0);
  for (uint8_t l : d.labels) {
    REQUIRE(l < 10);
    ++count[l];
  }
  for (int k = 0; k < 10; ++k) CHECK(count[size_t(k)] == 1000);  // balanced test split
  double mean = 0;
  for (uint8_t v : d.images) mean += v;
  mean /= 255.0 * double(d.images.size());
  CHECK(mean == doctest::Approx(0.2860).epsilon(0.02));
  BatchLoader L(d, 256, false, 0);
  CHECK(L.batches_per_epoch() == 40);
  L.start_epoch(0);
  Batch b;
  int n = 0;
  while (L.next(b)) n += b.size;
  CHECK(n == 10000);
}

}  // TEST_SUITE

// IDX (MNIST / Fashion-MNIST) and CIFAR-10 binary readers. See dataset.h.
#include "nn/data/dataset.h"

#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>

#include "backend/error.h"
#include "nn/data/image_cache.h"
#include "nn/data/image_folder.h"
#include "nn/data/image_source.h"

namespace fs = std::filesystem;

namespace vkqat::nn {
namespace {

constexpr int kClasses = 10;
constexpr uint32_t kIdxImagesMagic = 2051;  // 0x00000803: unsigned byte, 3 dimensions
constexpr uint32_t kIdxLabelsMagic = 2049;  // 0x00000801: unsigned byte, 1 dimension
constexpr size_t kCifarRecord = 1 + 3 * 32 * 32;
constexpr size_t kCifar100Record = 2 + 3 * 32 * 32;
const char* kKnown = "fashion-mnist, mnist, cifar10, cifar100, cifar100-coarse, folder or cache";

struct GzFile {
  gzFile f = nullptr;
  ~GzFile() {
    if (f) gzclose(f);
  }
};

// Whole file contents; gzip is decompressed, anything else is read as is (zlib's
// transparent mode), so "x.gz" holding raw bytes and "x" holding gzip both work.
std::vector<uint8_t> read_file(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw Error(path + ": file not found");
  if (!fs::is_regular_file(path, ec)) throw Error(path + ": not a regular file");
  GzFile g;
  g.f = gzopen(path.c_str(), "rb");
  if (!g.f) throw Error(path + ": cannot open: " + std::strerror(errno));
  gzbuffer(g.f, 1 << 17);
  const unsigned chunk = 1 << 20;
  std::vector<uint8_t> out;
  size_t used = 0;
  for (;;) {
    if (out.size() - used < chunk) out.resize(std::max(out.size() * 2, used + chunk));
    int r = gzread(g.f, out.data() + used, chunk);
    if (r < 0) {
      int errnum = 0;
      const char* msg = gzerror(g.f, &errnum);
      throw Error(path + ": read error: " +
                  (errnum == Z_ERRNO ? std::string(std::strerror(errno)) : std::string(msg)));
    }
    if (r == 0) break;
    used += size_t(r);
  }
  int errnum = Z_OK;
  const char* msg = gzerror(g.f, &errnum);
  if (errnum != Z_OK)  // Z_BUF_ERROR "unexpected end of file" = truncated gzip stream
    throw Error(path + ": corrupt or truncated gzip data (" + msg + ")");
  out.resize(used);
  return out;
}

uint32_t be32(const uint8_t* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}

std::string hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

void check_magic(const std::string& path, uint32_t got, uint32_t want) {
  if (got == want) return;
  std::string msg = path + ": bad IDX magic number " + hex32(got) + " (expected " + hex32(want) +
                    (want == kIdxImagesMagic ? ", an idx3-ubyte image file" : ", an idx1-ubyte label file");
  if (got == kIdxImagesMagic) msg += "; this looks like an image file";
  if (got == kIdxLabelsMagic) msg += "; this looks like a label file";
  throw Error(msg + ")");
}

void check_labels(const std::string& path, const uint8_t* labels, size_t n, size_t record_stride,
                  const char* what, int classes = kClasses) {
  for (size_t i = 0; i < n; ++i) {
    int l = labels[i * record_stride];
    if (l >= classes)
      throw Error(path + ": label " + std::to_string(l) + " of " + what + " " + std::to_string(i) +
                  " is out of range [0, " + std::to_string(classes) + ")");
  }
}

bool is_dir(const std::string& p) {
  std::error_code ec;
  return fs::is_directory(p, ec);
}

bool is_file(const std::string& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}

// dir/<prefix>-<kind>-ubyte with the spellings seen in the wild (".gz" and raw; '-' or '.'
// before idxN). Returns "" when none exists.
std::string find_idx_file(const std::string& dir, const std::string& prefix, const std::string& kind) {
  for (const char* sep : {"-", "."}) {
    for (const char* ext : {".gz", ""}) {
      std::string p = (fs::path(dir) / (prefix + sep + kind + "-ubyte" + ext)).string();
      if (is_file(p)) return p;
    }
  }
  return "";
}

void set_normalization(Dataset& d) { dataset_normalization(d.name, d.mean, d.std); }

}  // namespace

std::string default_data_dir(const std::string& name) {
  if (name == "fashion-mnist") return "/usr/share/datasets/fashion-mnist";
  if (name == "mnist") return "/usr/share/datasets/mnist";
  if (name == "cifar10") return "/usr/share/datasets/cifar10";
  if (name == "cifar100" || name == "cifar100-coarse") return "/usr/share/datasets/cifar100";
  throw Error("unknown dataset '" + name + "' (expected " + kKnown + ")");
}

void dataset_normalization(const std::string& name, std::array<float, 3>& mean,
                           std::array<float, 3>& std) {
  if (name == "fashion-mnist") {
    mean = {0.2860f, 0.2860f, 0.2860f};
    std = {0.3530f, 0.3530f, 0.3530f};
  } else if (name == "mnist") {
    mean = {0.1307f, 0.1307f, 0.1307f};
    std = {0.3081f, 0.3081f, 0.3081f};
  } else if (name == "cifar10") {
    mean = {0.4914f, 0.4822f, 0.4465f};
    std = {0.2470f, 0.2435f, 0.2616f};
  } else if (name == "cifar100" || name == "cifar100-coarse") {
    mean = {0.5071f, 0.4865f, 0.4409f};
    std = {0.2673f, 0.2564f, 0.2762f};
  } else {
    throw Error("unknown dataset '" + name + "' (expected " + kKnown + ")");
  }
}

Dataset load_idx(const std::string& images_path, const std::string& labels_path) {
  Dataset d;
  std::vector<uint8_t> img = read_file(images_path);
  if (img.size() >= 4) check_magic(images_path, be32(img.data()), kIdxImagesMagic);
  if (img.size() < 16)
    throw Error(images_path + ": too short for an IDX image header (" + std::to_string(img.size()) +
                " bytes, need 16)");
  uint32_t n = be32(img.data() + 4), h = be32(img.data() + 8), w = be32(img.data() + 12);
  if (h == 0 || w == 0 || h > 4096 || w > 4096)
    throw Error(images_path + ": implausible image size " + std::to_string(h) + "x" + std::to_string(w));
  if (n == 0 || n > uint32_t(std::numeric_limits<int>::max()))
    throw Error(images_path + ": implausible image count " + std::to_string(n));
  uint64_t pixels = uint64_t(n) * h * w;
  uint64_t have = img.size() - 16;
  if (have < pixels)
    throw Error(images_path + ": truncated: header announces " + std::to_string(n) + " images of " +
                std::to_string(h) + "x" + std::to_string(w) + " (" + std::to_string(pixels) +
                " bytes) but only " + std::to_string(have) + " bytes follow");
  if (have > pixels)
    throw Error(images_path + ": " + std::to_string(have - pixels) + " unexpected trailing bytes after " +
                std::to_string(n) + " images of " + std::to_string(h) + "x" + std::to_string(w));

  std::vector<uint8_t> lab = read_file(labels_path);
  if (lab.size() >= 4) check_magic(labels_path, be32(lab.data()), kIdxLabelsMagic);
  if (lab.size() < 8)
    throw Error(labels_path + ": too short for an IDX label header (" + std::to_string(lab.size()) +
                " bytes, need 8)");
  uint32_t nl = be32(lab.data() + 4);
  uint64_t lhave = lab.size() - 8;
  if (lhave < nl)
    throw Error(labels_path + ": truncated: header announces " + std::to_string(nl) + " labels but only " +
                std::to_string(lhave) + " bytes follow");
  if (lhave > nl)
    throw Error(labels_path + ": " + std::to_string(lhave - nl) + " unexpected trailing bytes after " +
                std::to_string(nl) + " labels");
  if (nl != n)
    throw Error(images_path + " holds " + std::to_string(n) + " images but " + labels_path + " holds " +
                std::to_string(nl) + " labels");
  check_labels(labels_path, lab.data() + 8, nl, 1, "item");

  d.n = int(n);
  d.channels = 1;
  d.height = int(h);
  d.width = int(w);
  d.classes = kClasses;
  img.erase(img.begin(), img.begin() + 16);
  d.images = std::move(img);
  d.labels.assign(lab.begin() + 8, lab.end());
  return d;
}

Dataset load_cifar10_files(const std::vector<std::string>& paths) {
  Dataset d;
  d.channels = 3;
  d.height = 32;
  d.width = 32;
  d.classes = kClasses;
  for (const std::string& path : paths) {
    std::vector<uint8_t> buf = read_file(path);
    if (buf.empty() || buf.size() % kCifarRecord != 0)
      throw Error(path + ": size " + std::to_string(buf.size()) + " is not a positive multiple of " +
                  std::to_string(kCifarRecord) +
                  " (CIFAR-10 binary records: 1 label byte + 3072 pixel bytes); truncated or not a "
                  "CIFAR-10 batch file");
    size_t records = buf.size() / kCifarRecord;
    check_labels(path, buf.data(), records, kCifarRecord, "record");
    size_t total = size_t(d.n) + records;
    if (total > size_t(std::numeric_limits<int>::max())) throw Error(path + ": too many records");
    d.images.reserve(total * (kCifarRecord - 1));
    d.labels.reserve(total);
    for (size_t r = 0; r < records; ++r) {
      const uint8_t* rec = buf.data() + r * kCifarRecord;
      d.labels.push_back(rec[0]);
      d.images.insert(d.images.end(), rec + 1, rec + kCifarRecord);
    }
    d.n = int(total);
  }
  if (d.n == 0) throw Error("CIFAR-10: no batch files given");
  return d;
}

Dataset load_cifar100_file(const std::string& path, bool fine) {
  Dataset d;
  d.channels = 3;
  d.height = 32;
  d.width = 32;
  d.classes = fine ? 100 : 20;
  std::vector<uint8_t> buf = read_file(path);
  if (buf.empty() || buf.size() % kCifar100Record != 0)
    throw Error(path + ": size " + std::to_string(buf.size()) + " is not a positive multiple of " +
                std::to_string(kCifar100Record) +
                " (CIFAR-100 binary records: coarse label, fine label, 3072 pixel bytes); truncated or not a "
                "CIFAR-100 file");
  const size_t records = buf.size() / kCifar100Record;
  if (records > size_t(std::numeric_limits<int>::max())) throw Error(path + ": too many records");
  check_labels(path, buf.data(), records, kCifar100Record, "record (coarse label)", 20);
  check_labels(path, buf.data() + 1, records, kCifar100Record, "record (fine label)", 100);
  d.n = int(records);
  d.images.resize(records * (kCifar100Record - 2));
  d.labels.resize(records);
  for (size_t r = 0; r < records; ++r) {
    const uint8_t* rec = buf.data() + r * kCifar100Record;
    d.labels[r] = rec[fine ? 1 : 0];
    std::copy(rec + 2, rec + kCifar100Record, d.images.begin() + ptrdiff_t(r * (kCifar100Record - 2)));
  }
  const fs::path names = fs::path(path).parent_path() / (fine ? "fine_label_names.txt" : "coarse_label_names.txt");
  if (is_file(names.string())) {
    std::ifstream in(names);
    std::string line;
    while (std::getline(in, line))
      if (!line.empty()) d.class_names.push_back(line);
    if (int(d.class_names.size()) != d.classes) d.class_names.clear();  // not the file we know
  }
  return d;
}

uint32_t Dataset::label(int i) const {
  return source ? source->label(int(source_entry(i))) : uint32_t(labels[size_t(i)]);
}

Dataset load_dataset(const std::string& name, const std::string& dir_arg, bool train) {
  if (name == "folder" || name == "cache") {
    if (dir_arg.empty()) throw Error("--data " + name + " needs --data-dir PATH");
    return train ? load_dataset_splits(name, dir_arg, {}).first : load_test_split(name, dir_arg, {});
  }
  const std::string dir = dir_arg.empty() ? default_data_dir(name) : dir_arg;
  if (name != "fashion-mnist" && name != "mnist" && name != "cifar10" && name != "cifar100" &&
      name != "cifar100-coarse")
    throw Error("unknown dataset '" + name + "' (expected " + std::string(kKnown) + ")");
  std::error_code ec;
  if (!fs::exists(dir, ec)) {
    if (dir_arg.empty())
      throw Error(name + ": default data directory " + dir +
                  " does not exist; download the dataset and pass --data-dir DIR" +
                  (name == "fashion-mnist" ? " (or install the Debian package dataset-fashion-mnist)" : ""));
    throw Error(name + ": data directory " + dir + " does not exist");
  }
  if (!is_dir(dir)) throw Error(name + ": data path " + dir + " is not a directory");
  // Without read+search permission every file would look "not found".
  if (::access(dir.c_str(), R_OK | X_OK) != 0)
    throw Error(name + ": data directory " + dir + " is not readable: " + std::strerror(errno));

  Dataset d;
  if (name == "cifar10") {
    std::string base = dir;
    std::string sub = (fs::path(dir) / "cifar-10-batches-bin").string();
    if (is_dir(sub)) base = sub;
    std::vector<std::string> files;
    if (train) {
      for (int i = 1; i <= 5; ++i)
        files.push_back((fs::path(base) / ("data_batch_" + std::to_string(i) + ".bin")).string());
    } else {
      files.push_back((fs::path(base) / "test_batch.bin").string());
    }
    for (const std::string& f : files)
      if (!is_file(f))
        throw Error("cifar10: " + f + " not found (expected the CIFAR-10 binary version, "
                    "data_batch_1..5.bin and test_batch.bin, in the directory or its "
                    "cifar-10-batches-bin subdirectory; pass --data-dir DIR)");
    d = load_cifar10_files(files);
  } else if (name == "cifar100" || name == "cifar100-coarse") {
    std::string base = dir;
    std::string sub = (fs::path(dir) / "cifar-100-binary").string();
    if (is_dir(sub)) base = sub;
    const std::string f = (fs::path(base) / (train ? "train.bin" : "test.bin")).string();
    if (!is_file(f))
      throw Error(name + ": " + f + " not found (expected the CIFAR-100 binary version, train.bin and test.bin, "
                  "in the directory or its cifar-100-binary subdirectory; pass --data-dir DIR)");
    d = load_cifar100_file(f, name == "cifar100");
  } else {
    const std::string prefix = train ? "train" : "t10k";
    std::string images = find_idx_file(dir, prefix, "images-idx3");
    std::string labels = find_idx_file(dir, prefix, "labels-idx1");
    for (auto [path, kind] : {std::pair{&images, "images-idx3"}, std::pair{&labels, "labels-idx1"}})
      if (path->empty())
        throw Error(name + ": " + (fs::path(dir) / (prefix + "-" + kind + "-ubyte")).string() +
                    "(.gz) not found; is " + dir + " the " + name + " directory? (pass --data-dir DIR)");
    d = load_idx(images, labels);
  }
  d.name = name;
  set_normalization(d);
  return d;
}

std::pair<Dataset, Dataset> load_dataset_splits(const std::string& name, const std::string& dir,
                                                const DataOptions& o) {
  o.validate();
  std::pair<Dataset, Dataset> p;
  if (name == "folder") {
    if (dir.empty()) throw Error("--data folder needs --data-dir PATH (a folder with train/<class>/ and val/<class>/)");
    return load_image_folder(dir, o);
  }
  if (name == "cache") {
    if (dir.empty()) throw Error("--data cache needs --data-dir FILE (written by `vkqat data cache`)");
    return load_image_cache(dir, o);
  }
  if (o.image_size != 0 || o.val_split != 0 || o.in_channels != 0)
    throw Error("--image-size, --val-split and --in-channels apply to --data folder and cache only (" + name +
                " has fixed images)");
  if (o.augment == "imagenet") throw Error("--augment imagenet applies to --data folder and cache only");
  p.first = load_dataset(name, dir, true);
  p.second = load_dataset(name, dir, false);
  apply_normalization_options(p.first, o);
  apply_normalization_options(p.second, o);
  return p;
}

Dataset load_test_split(const std::string& name, const std::string& dir, const DataOptions& o) {
  if (name == "folder" || name == "cache") return load_dataset_splits(name, dir, o).second;
  Dataset d = load_dataset(name, dir, false);
  apply_normalization_options(d, o);
  return d;
}

Dataset materialize(const Dataset& d) {
  if (!d.source) return d;
  if (d.classes > 256) throw Error(d.name + ": more than 256 classes cannot be held as byte labels");
  Dataset r = d;
  r.source.reset();
  r.images.resize(size_t(d.n) * d.image_size());
  r.labels.resize(size_t(d.n));
  for (int i = 0; i < d.n; ++i)
    r.labels[size_t(i)] =
        uint8_t(d.source->produce(int(d.source_entry(i)), false, 0, r.images.data() + size_t(i) * d.image_size()));
  return r;
}

Dataset first_n(const Dataset& d, int k) {
  if (d.source) {  // the source stays shared; evenly spaced entries of it
    Dataset r = d;
    r.n = std::clamp(k, 0, d.n);
    r.source_index.resize(size_t(r.n));
    for (int j = 0; j < r.n; ++j) r.source_index[size_t(j)] = d.source_entry(int(int64_t(j) * d.n / r.n));
    return r;
  }
  Dataset r;
  r.n = std::clamp(k, 0, d.n);
  r.channels = d.channels;
  r.height = d.height;
  r.width = d.width;
  r.classes = d.classes;
  r.name = d.name;
  r.class_names = d.class_names;
  r.mean = d.mean;
  r.std = d.std;
  r.images.assign(d.images.begin(), d.images.begin() + size_t(r.n) * d.image_size());
  r.labels.assign(d.labels.begin(), d.labels.begin() + r.n);
  return r;
}

}  // namespace vkqat::nn

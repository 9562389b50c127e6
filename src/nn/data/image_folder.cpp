// Image folder scanning and the decoding source. See image_folder.h.
#include "nn/data/image_folder.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>

#include "backend/error.h"

namespace fs = std::filesystem;

namespace vkqat::nn {
namespace {

constexpr size_t kProbeBytes = 64 * 1024;  // enough for the header of nearly every JPEG/PNG

void warn(FolderScan& s, bool print, const std::string& msg) {
  s.warnings.push_back(msg);
  if (print) std::fprintf(stderr, "vkqat: warning: %s\n", msg.c_str());
}

std::vector<uint8_t> read_prefix(const std::string& path, size_t limit, bool* whole) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path + ": cannot open: " + std::strerror(errno));
  std::vector<uint8_t> buf(limit);
  in.read(reinterpret_cast<char*>(buf.data()), std::streamsize(limit));
  buf.resize(size_t(in.gcount()));
  *whole = buf.size() < limit;
  return buf;
}

ImageInfo probe_file(const std::string& path) {
  bool whole = false;
  std::vector<uint8_t> head = read_prefix(path, kProbeBytes, &whole);
  try {
    return probe_image(head.data(), head.size());
  } catch (const DecodeError&) {
    if (whole) throw;
  }
  std::vector<uint8_t> all = read_whole_file(path);
  return probe_image(all.data(), all.size());
}

std::vector<std::string> sorted_subdirs(const fs::path& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.is_directory() && e.path().filename().string()[0] != '.') names.push_back(e.path().filename().string());
  if (ec) throw Error(dir.string() + ": cannot list: " + ec.message());
  std::sort(names.begin(), names.end());
  return names;
}

// Image files below dir (sorted), probed; bad ones are recorded and skipped.
std::vector<FolderEntry> scan_class(FolderScan& s, const fs::path& dir, uint32_t label, bool strict, bool print) {
  std::vector<std::string> files;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, fs::directory_options::follow_directory_symlink, ec);
       it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) break;
    const std::string name = it->path().filename().string();
    if (!name.empty() && name[0] == '.') {  // hidden files and folders (.DS_Store, .git)
      if (it->is_directory()) it.disable_recursion_pending();
      continue;
    }
    if (it->is_regular_file()) files.push_back(it->path().string());
  }
  if (ec) throw Error(dir.string() + ": cannot list: " + ec.message());
  std::sort(files.begin(), files.end());
  std::vector<FolderEntry> out;
  out.reserve(files.size());
  for (const std::string& f : files) {
    try {
      FolderEntry e{f, label, probe_file(f)};
      if (int64_t(e.info.width) * e.info.height > kMaxDecodePixels && e.info.format != ImageFormat::Jpeg)
        throw DecodeError("image too large to decode (" + std::to_string(e.info.width) + "x" +
                          std::to_string(e.info.height) + ")");
      out.push_back(std::move(e));
    } catch (const DecodeError& err) {
      if (strict) throw Error(f + ": " + err.what() + " (--strict)");
      s.bad.push_back({f, err.what()});
      warn(s, print, f + ": " + err.what() + ", skipped");
    }
  }
  return out;
}

}  // namespace

std::vector<uint8_t> read_whole_file(const std::string& path) {
  std::vector<uint8_t> buf;
  read_whole_file(path, buf);
  return buf;
}

void read_whole_file(const std::string& path, std::vector<uint8_t>& buf) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw Error(path + ": cannot open: " + std::strerror(errno));
  const std::streamoff n = in.tellg();
  if (n < 0) throw Error(path + ": cannot read");
  buf.resize(static_cast<size_t>(n));
  in.seekg(0);
  in.read(reinterpret_cast<char*>(buf.data()), n);
  if (in.gcount() != n) throw Error(path + ": read error");
}

FolderScan scan_image_folder(const std::string& root, double val_split, bool strict, bool print) {
  FolderScan s;
  s.root = root;
  std::error_code ec;
  if (!fs::is_directory(root, ec)) throw Error("image folder " + root + ": not a directory");
  const fs::path train_dir = fs::path(root) / "train", val_dir = fs::path(root) / "val";
  if (!fs::is_directory(train_dir, ec))
    throw Error("image folder " + root + ": no train/ subfolder (expected " + root + "/train/<class>/<images>)");
  s.has_val_dir = fs::is_directory(val_dir, ec);
  s.classes = sorted_subdirs(train_dir);
  if (s.classes.empty()) throw Error(train_dir.string() + ": no class folders (expected train/<class>/<images>)");
  if (s.classes.size() < 2)
    throw Error(train_dir.string() + ": only one class (" + s.classes[0] + "); a classifier needs at least two");
  for (const auto& e : fs::directory_iterator(train_dir, ec))
    if (e.is_regular_file() && e.path().filename().string()[0] != '.')
      warn(s, print, e.path().string() + ": outside any class folder, ignored");

  std::vector<std::vector<FolderEntry>> per_class;
  for (uint32_t c = 0; c < s.classes.size(); ++c)
    per_class.push_back(scan_class(s, train_dir / s.classes[c], c, strict, print));

  if (s.has_val_dir) {
    if (val_split > 0) throw Error("--val-split: " + root + " has a val/ folder already");
    const std::vector<std::string> val_classes = sorted_subdirs(val_dir);
    std::vector<std::string> extra;
    for (const std::string& c : val_classes)
      if (!std::binary_search(s.classes.begin(), s.classes.end(), c)) extra.push_back(c);
    if (!extra.empty()) {
      std::string list;
      for (const std::string& c : extra) list += (list.empty() ? "" : ", ") + c;
      throw Error(val_dir.string() + ": classes missing from train/: " + list +
                  " (train/ and val/ must use the same class folders)");
    }
    for (uint32_t c = 0; c < s.classes.size(); ++c) {
      const fs::path d = val_dir / s.classes[c];
      if (!fs::is_directory(d, ec)) {
        warn(s, print, d.string() + ": class " + s.classes[c] + " has no val/ folder");
        continue;
      }
      std::vector<FolderEntry> v = scan_class(s, d, c, strict, print);
      if (v.empty()) warn(s, print, d.string() + ": class " + s.classes[c] + " has no readable validation images");
      s.val.insert(s.val.end(), v.begin(), v.end());
    }
  }
  for (uint32_t c = 0; c < s.classes.size(); ++c) {
    std::vector<FolderEntry>& files = per_class[c];
    if (!s.has_val_dir && val_split > 0 && !files.empty()) {
      // A fixed shuffle per class (independent of --seed): the held-out set never changes.
      std::vector<size_t> idx(files.size());
      for (size_t i = 0; i < idx.size(); ++i) idx[i] = i;
      std::mt19937_64 rng(0x76616c73706c6974ull ^ c);
      for (size_t i = idx.size() - 1; i > 0; --i) std::swap(idx[i], idx[rng() % (i + 1)]);
      const size_t nval = size_t(std::lround(val_split * double(files.size())));
      std::vector<bool> is_val(files.size(), false);
      for (size_t k = 0; k < nval; ++k) is_val[idx[k]] = true;
      for (size_t i = 0; i < files.size(); ++i) (is_val[i] ? s.val : s.train).push_back(files[i]);
    } else {
      s.train.insert(s.train.end(), files.begin(), files.end());
    }
    if (files.empty())
      warn(s, print, (train_dir / s.classes[c]).string() + ": class " + s.classes[c] + " has no readable images");
  }
  if (s.train.empty()) throw Error(train_dir.string() + ": no readable training images");
  if (!s.bad.empty()) warn(s, print, std::to_string(s.bad.size()) + " unreadable files skipped in " + root);
  return s;
}

int folder_channels(const FolderScan& scan, int forced) {
  if (forced) return forced;
  for (const auto* split : {&scan.train, &scan.val})
    for (const FolderEntry& e : *split)
      if (e.info.channels != 1) return 3;
  return 1;
}

bool BadFileLog::report(const std::string& path, const std::string& reason) {
  std::lock_guard<std::mutex> lk(mu_);
  if (!seen_.insert(path).second) return false;
  std::fprintf(stderr, "vkqat: warning: %s: %s, replaced by the next readable image (%zu unreadable so far)\n",
               path.c_str(), reason.c_str(), seen_.size());
  return true;
}

size_t BadFileLog::count() const {
  std::lock_guard<std::mutex> lk(mu_);
  return seen_.size();
}

FolderSource::FolderSource(std::vector<FolderEntry> entries, ImageTransform t, int workers, bool strict)
    : entries_(std::move(entries)), t_(t), workers_(std::max(1, workers)), strict_(strict) {}

Image FolderSource::base_image(int i) const {
  std::vector<uint8_t> bytes;
  Image decoded, resized;
  const Image& base = base_image(i, bytes, decoded, resized);
  return &base == &decoded ? std::move(decoded) : std::move(resized);
}

const Image& FolderSource::base_image(int i, std::vector<uint8_t>& bytes, Image& decoded, Image& resized) const {
  const FolderEntry& e = entries_[size_t(i)];
  read_whole_file(e.path, bytes);
  try {
    decode_image_into(bytes.data(), bytes.size(), t_.channels, t_.base_size(), decoded);
    return t_.to_base(decoded, resized);
  } catch (const DecodeError& err) {
    throw Error(e.path + ": " + err.what());
  }
}

uint32_t FolderSource::produce(int i, bool train, uint64_t rng_seed, uint8_t* out) const {
  // Per worker thread, reused image after image; a huge image's memory is not kept.
  thread_local std::vector<uint8_t> bytes;
  thread_local Image decoded, resized;
  struct Trim {
    ~Trim() {
      constexpr size_t kKeep = size_t(16) << 20;
      if (bytes.capacity() > kKeep) std::vector<uint8_t>().swap(bytes);
      for (Image* im : {&decoded, &resized})
        if (im->pixels.capacity() > kKeep) *im = Image();
    }
  } trim;
  const int n = size();
  for (int k = 0; k < n; ++k) {
    const int j = (i + k) % n;
    const Image* base = nullptr;
    try {
      base = &base_image(j, bytes, decoded, resized);
    } catch (const Error& err) {
      if (strict_) throw Error(std::string(err.what()) + " (--strict)");
      const std::string msg = err.what(), prefix = entries_[size_t(j)].path + ": ";
      bad_.report(entries_[size_t(j)].path, msg.rfind(prefix, 0) == 0 ? msg.substr(prefix.size()) : msg);
      continue;
    }
    std::mt19937_64 rng(rng_seed);
    t_.apply(base->pixels.data(), base->height, base->width, train, rng, out);
    return entries_[size_t(j)].label;
  }
  throw Error("no image of the folder can be decoded");
}

void imagenet_normalization(int channels, std::array<float, 3>& mean, std::array<float, 3>& std) {
  if (channels == 3) {
    mean = {0.485f, 0.456f, 0.406f};
    std = {0.229f, 0.224f, 0.225f};
  } else {
    mean = {0.449f, 0.449f, 0.449f};  // the average of ImageNet's three channels
    std = {0.226f, 0.226f, 0.226f};
  }
}

void apply_normalization_options(Dataset& d, const DataOptions& o) {
  auto set = [](std::array<float, 3>& dst, const std::vector<float>& v) {
    if (v.size() == 1) dst = {v[0], v[0], v[0]};
    if (v.size() == 3) dst = {v[0], v[1], v[2]};
  };
  set(d.mean, o.mean);
  set(d.std, o.std);
  if (d.channels == 1 && (o.mean.size() == 3 || o.std.size() == 3))
    throw Error("--mean/--std: three values given for grayscale images (give one)");
}

std::pair<Dataset, Dataset> load_image_folder(const std::string& root, const DataOptions& o) {
  FolderScan scan = scan_image_folder(root, o.val_split, o.strict);
  if (scan.val.empty())
    throw Error("image folder " + root + ": no validation images (add " + root +
                "/val/<class>/ or pass --val-split F)");
  ImageTransform t;
  t.mode = o.augment.empty() ? AugmentMode::None : parse_augment_mode(o.augment);
  t.size = o.image_size > 0 ? o.image_size : 224;
  t.channels = folder_channels(scan, o.in_channels);
  auto make = [&](std::vector<FolderEntry> entries) {
    Dataset d;
    d.name = "folder";
    d.n = int(entries.size());
    d.channels = t.channels;
    d.height = d.width = t.size;
    d.classes = int(scan.classes.size());
    d.class_names = scan.classes;
    imagenet_normalization(t.channels, d.mean, d.std);
    apply_normalization_options(d, o);
    d.source = std::make_shared<FolderSource>(std::move(entries), t, o.resolved_workers(), o.strict);
    return d;
  };
  return {make(std::move(scan.train)), make(std::move(scan.val))};
}

}  // namespace vkqat::nn

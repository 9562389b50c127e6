#include "quant/stats_file.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <iterator>

#include "backend/error.h"
#include "nn/train/trainer.h"

namespace vkqat::quant {
namespace fs = std::filesystem;

namespace {
const char kMagic[16] = {'v', 'k', 'q', 'a', 't', '-', 's', 't', 'a', 't', 's', '-', 'v', '1', '\n', '\0'};
// A record larger than this is corruption, not statistics (a snapshot is tens of KB).
constexpr uint32_t kMaxRecord = 64u << 20;

std::string stats_path(const std::string& p) { return fs::is_directory(p) ? (fs::path(p) / kStatsFileName).string() : p; }

void append_record(std::ofstream& out, const StatsSnapshot& s) {
  const std::vector<uint8_t> bytes = nlohmann::json::to_cbor(s.to_json());
  const uint32_t n = uint32_t(bytes.size());
  const uint8_t len[4] = {uint8_t(n), uint8_t(n >> 8), uint8_t(n >> 16), uint8_t(n >> 24)};
  out.write(reinterpret_cast<const char*>(len), 4);
  out.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
}
}  // namespace

StatsWriter::StatsWriter(const std::string& run_dir) : path_((fs::path(run_dir) / kStatsFileName).string()) {
  std::error_code ec;
  fs::create_directories(run_dir, ec);
  const bool exists = fs::exists(path_) && fs::file_size(path_) > 0;
  if (exists) read_stats_file(path_);  // never append to a file we could not read back
  out_.open(path_, std::ios::binary | std::ios::app);
  if (!out_) throw Error("cannot write " + path_);
  if (!exists) out_.write(kMagic, sizeof kMagic);
  out_.flush();
}

void StatsWriter::write(const StatsSnapshot& s) {
  append_record(out_, s);
  out_.flush();
  if (!out_) throw Error("cannot write " + path_);
}

std::vector<StatsSnapshot> read_stats_file(const std::string& given) {
  const std::string path = stats_path(given);
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path + ": cannot open (no statistics? train with --stats-every N)");
  const std::vector<uint8_t> data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (data.size() < sizeof kMagic || std::memcmp(data.data(), kMagic, sizeof kMagic) != 0)
    throw Error(path + ": not a vkqat statistics file (bad header)");
  std::vector<StatsSnapshot> out;
  size_t pos = sizeof kMagic;
  while (pos < data.size()) {
    if (data.size() - pos < 4) throw Error(path + ": truncated record length at byte " + std::to_string(pos));
    const uint32_t n = uint32_t(data[pos]) | uint32_t(data[pos + 1]) << 8 | uint32_t(data[pos + 2]) << 16 |
                       uint32_t(data[pos + 3]) << 24;
    if (n == 0 || n > kMaxRecord || n > data.size() - pos - 4)
      throw Error(path + ": corrupt record at byte " + std::to_string(pos) + " (length " + std::to_string(n) + " runs past the end)");
    const auto first = data.begin() + std::ptrdiff_t(pos + 4);
    nlohmann::json j;
    try {  // allow_exceptions=false still throws for some inputs (an object size of 2^62: found by fuzz_stats)
      j = nlohmann::json::from_cbor(first, first + n, true, false);
    } catch (const nlohmann::json::exception& e) {
      throw Error(path + ": corrupt record at byte " + std::to_string(pos) + " (" + e.what() + ")");
    }
    if (j.is_discarded() || !j.is_object())
      throw Error(path + ": corrupt record at byte " + std::to_string(pos) + " (not valid CBOR)");
    try {
      out.push_back(StatsSnapshot::from_json(j));
    } catch (const Error& e) {
      throw Error(path + ": record at byte " + std::to_string(pos) + ": " + e.what());
    }
    pos += 4 + n;
  }
  return out;
}

void truncate_stats_file_after(const std::string& run_dir, int64_t step) {
  const std::string path = (fs::path(run_dir) / kStatsFileName).string();
  if (!fs::exists(path)) return;
  std::vector<StatsSnapshot> kept = read_stats_file(path);
  kept.erase(std::remove_if(kept.begin(), kept.end(), [&](const StatsSnapshot& s) { return s.step > step; }), kept.end());
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(kMagic, sizeof kMagic);
    for (const auto& s : kept) append_record(out, s);
    out.close();  // a full disk may only show here
    if (!out) throw Error("cannot write " + tmp);
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) throw Error("cannot rename " + tmp + " to " + path + ": " + ec.message());
}

StatsRecorder::StatsRecorder(const std::string& run_dir, int every) : every_(every), writer_(run_dir) {
  if (every < 1) throw Error("--stats-every must be >= 1, got " + std::to_string(every));
}

void StatsRecorder::after_step(nn::Trainer& t, const nn::StepReport& r) {
  if (r.step % every_ == 0) collect(t, r);
}

StatsSnapshot StatsRecorder::collect(nn::Trainer& t, const nn::StepReport& r) {
  if (!collector_) collector_ = std::make_unique<StatsCollector>(t.network().input().context(), t.network());
  StatsSnapshot s = collector_->collect();
  s.step = r.step, s.epoch = r.epoch;
  s.scalars = {r.loss, r.acc, r.aux_loss, r.aux_acc, r.lr, r.images_per_s, r.has_aux};
  writer_.write(s);
  return s;
}

}  // namespace vkqat::quant

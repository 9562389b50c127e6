#pragma once
// The statistics file of a run, RUN_DIR/stats.cbor, next to metrics.jsonl: what
// `vkqat train --stats-every N` and the visualizer write, and `vkqat-viz --replay` reads.
// Format: the 16 bytes "vkqat-stats-v1\n\0", then records, each a little-endian uint32
// byte count followed by that many bytes of CBOR (RFC 8949) holding one
// StatsSnapshot::to_json() object. Appending is safe across resumes; a reader rejects a bad
// header, a record running past the end and a record that is not valid CBOR, naming the
// file and the record's byte offset.
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "nn/train/train_control.h"
#include "quant/stats.h"

namespace vkqat::quant {

constexpr const char* kStatsFileName = "stats.cbor";

class StatsWriter {
 public:
  // Opens (creating with the header, or appending after checking it) RUN_DIR/stats.cbor.
  explicit StatsWriter(const std::string& run_dir);
  void write(const StatsSnapshot& s);  // one record, flushed
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::ofstream out_;
};

// Every record of RUN_DIR/stats.cbor (or of the file itself when given a file). Throws Error.
std::vector<StatsSnapshot> read_stats_file(const std::string& path);
// Records with a step > `step` are dropped (a resumed run writes them again).
void truncate_stats_file_after(const std::string& run_dir, int64_t step);

// A TrainHooks that collects statistics every `every` steps into RUN_DIR/stats.cbor.
class StatsRecorder : public nn::TrainHooks {
 public:
  StatsRecorder(const std::string& run_dir, int every);
  void after_step(nn::Trainer& t, const nn::StepReport& r) override;
  // The network was rebuilt (Trainer::reconfigure): the collector is rebuilt before its next use.
  void reset() { collector_.reset(); }
  // Collects now (and writes the record); also used by the visualizer.
  StatsSnapshot collect(nn::Trainer& t, const nn::StepReport& r);
  int every() const { return every_; }

 private:
  int every_;
  StatsWriter writer_;
  std::unique_ptr<StatsCollector> collector_;
};

}  // namespace vkqat::quant

#include "nn/train/run_state.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <vector>

#include "backend/error.h"

namespace vkqat::nn {
namespace fs = std::filesystem;

const char* const kCheckpointFile = "checkpoint.safetensors";
const char* const kTrainerStateFile = "trainer_state.safetensors";
const char* const kRunStateFile = "run_state.json";

namespace {
const char* const kUnitsDir = "checkpoints";
const char* const kRunStateFormat = "vkqat-run-state-1";

std::string errno_text() { return std::strerror(errno); }

void fsync_path(const std::string& path, bool directory) {
  const int fd = ::open(path.c_str(), directory ? (O_RDONLY | O_DIRECTORY) : O_RDONLY);
  if (fd < 0) throw Error(path + ": cannot open for fsync: " + errno_text());
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) throw Error(path + ": fsync failed: " + std::strerror(err));
}

void write_all(const std::string& path, const std::string& text) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw Error("cannot write " + path + ": " + errno_text());
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = errno;
      ::close(fd);
      throw Error("cannot write " + path + ": " + std::strerror(err));
    }
    done += size_t(n);
  }
  // A full disk may only show at fsync or close (delayed allocation, NFS): both are checked.
  if (::fsync(fd) != 0 && errno != EINVAL) {  // EINVAL: a special file (e.g. /dev/null) without fsync
    const int err = errno;
    ::close(fd);
    throw Error("cannot write " + path + ": " + std::strerror(err));
  }
  if (::close(fd) != 0) throw Error("cannot write " + path + ": " + errno_text());
}

std::string parent_of(const std::string& path) {
  std::string p = fs::path(path).parent_path().string();
  return p.empty() ? "." : p;
}

// The step of a unit directory name "step-<N>" or "step-<N>.<k>"; -1 for anything else.
int64_t unit_step(const std::string& name) {
  if (name.rfind("step-", 0) != 0 || name.size() > 40) return -1;
  const std::string rest = name.substr(5);
  const size_t digits = rest.find_first_not_of("0123456789");
  if (digits == 0) return -1;
  const std::string num = rest.substr(0, digits);
  const std::string tail = digits == std::string::npos ? "" : rest.substr(digits);
  if (!tail.empty() && (tail[0] != '.' || tail.size() < 2 || tail.find_first_not_of("0123456789", 1) != std::string::npos))
    return -1;
  return num.size() > 18 ? -1 : std::stoll(num);
}

struct Manifest {
  int64_t step = -1;
  std::string dir;  // relative to the run directory
};

// Manifest of run_dir; step -1 when there is none. A corrupt one is an error naming it.
Manifest read_manifest(const std::string& run_dir) {
  const std::string path = run_dir + "/" + kRunStateFile;
  Manifest m;
  std::error_code ec;
  if (!fs::exists(path, ec)) {
    if (ec) throw Error(path + ": " + ec.message());
    return m;
  }
  std::ifstream in(path);
  if (!in) throw Error(path + ": cannot read: " + errno_text());
  const nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("step") || !j["step"].is_number_integer() ||
      !j.contains("dir") || !j["dir"].is_string())
    throw Error(path + ": not a vkqat run state (expected {\"format\": \"" + kRunStateFormat +
                "\", \"step\": N, \"dir\": \"checkpoints/step-N\"})");
  m.step = j["step"].get<int64_t>();
  m.dir = j["dir"].get<std::string>();
  if (m.dir.find("..") != std::string::npos || m.dir.empty() || m.dir[0] == '/')
    throw Error(path + ": dir '" + m.dir + "' must be a unit directory inside the run directory");
  return m;
}

// Publishes `from` (a fsynced file) as `to` through a hard link (a copy where links are
// not supported), atomically.
void publish_copy(const std::string& from, const std::string& to) {
  const std::string tmp = to + ".tmp";
  std::error_code ec;
  fs::remove(tmp, ec);
  fs::create_hard_link(from, tmp, ec);
  if (ec) {
    ec.clear();
    fs::copy_file(from, tmp, fs::copy_options::overwrite_existing, ec);
    if (ec) throw Error("cannot write " + tmp + ": " + ec.message());
    fsync_path(tmp, false);
  }
  fs::rename(tmp, to, ec);
  if (ec) throw Error("cannot rename " + tmp + " to " + to + ": " + ec.message());
  fsync_path(parent_of(to), true);
}
}  // namespace

void fault_point(const char* point) {
  const char* env = std::getenv("VKQAT_FAULT_AT");
  if (!env) return;
  // "POINT" fires at the first pass through POINT, "POINT@N" at the N-th of this process.
  static std::map<std::string, int> passes;
  const std::string at = env;
  const size_t sep = at.find('@');
  if (at.substr(0, sep) != point) return;
  const int nth = sep == std::string::npos ? 1 : std::atoi(at.c_str() + sep + 1);
  if (++passes[at] == nth) throw InjectedFault(point);
}

void write_file_durably(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  write_all(tmp, text);
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) throw Error("cannot rename " + tmp + " to " + path + ": " + ec.message());
  fsync_path(parent_of(path), true);
}

std::string first_non_finite_tensor(const SafeTensors& st) {
  for (const auto& [name, t] : st.tensors) {
    if (t.dtype != "F32") continue;
    const size_t n = t.data.size() / sizeof(float);
    for (size_t i = 0; i < n; ++i) {
      float v;
      std::memcpy(&v, t.data.data() + i * sizeof(float), sizeof v);
      if (!std::isfinite(v)) return name;
    }
  }
  return "";
}

void commit_run_state(const std::string& run_dir, int64_t step, const SafeTensors& checkpoint,
                      const SafeTensors& trainer_state, int keep) {
  if (keep < 1) throw Error("--keep-checkpoints must be at least 1, got " + std::to_string(keep));
  const std::string units = run_dir + "/" + kUnitsDir;
  std::error_code ec;
  fs::create_directories(units, ec);
  if (ec) throw Error("cannot create " + units + ": " + ec.message());

  // A unit name never reused while a manifest may point to it (several saves at one step).
  const std::string base = "step-" + std::to_string(step);
  std::string name = base;
  for (int k = 1; fs::exists(units + "/" + name) || fs::exists(units + "/" + name + ".tmp"); ++k)
    name = base + "." + std::to_string(k);
  const std::string tmp = units + "/" + name + ".tmp", final_dir = units + "/" + name;
  fs::create_directory(tmp, ec);
  if (ec) throw Error("cannot create " + tmp + ": " + ec.message());
  write_safetensors(tmp + "/" + kCheckpointFile, checkpoint);  // fsynced by the writer
  fault_point("checkpoint-written");
  write_safetensors(tmp + "/" + kTrainerStateFile, trainer_state);
  fsync_path(tmp, true);
  fault_point("unit-written");
  fs::rename(tmp, final_dir, ec);
  if (ec) throw Error("cannot rename " + tmp + " to " + final_dir + ": " + ec.message());
  fsync_path(units, true);
  fault_point("unit-renamed");

  const nlohmann::json manifest = {
      {"format", kRunStateFormat}, {"step", step}, {"dir", std::string(kUnitsDir) + "/" + name}};
  write_file_durably(run_dir + "/" + kRunStateFile, manifest.dump(2) + "\n");  // the commit
  fault_point("manifest-written");
  publish_copy(final_dir + "/" + kCheckpointFile, run_dir + "/" + kCheckpointFile);
  fault_point("checkpoint-published");

  // Prune: keep the newest `keep` committed units; drop leftovers of interrupted saves and
  // the trainer state of the pre-manifest layout (the manifest now rules).
  std::vector<std::string> kept;
  for (const auto& e : fs::directory_iterator(units, ec)) {
    const std::string n = e.path().filename().string();
    if (n.size() > 4 && n.compare(n.size() - 4, 4, ".tmp") == 0) {
      fs::remove_all(e.path(), ec);
      continue;
    }
    if (unit_step(n) >= 0) kept.push_back(n);
  }
  // Newest first by step, then by save order (the .k suffix), never the committed one.
  std::sort(kept.begin(), kept.end(), [](const std::string& a, const std::string& b) {
    const int64_t sa = unit_step(a), sb = unit_step(b);
    if (sa != sb) return sa > sb;
    return a.size() != b.size() ? a.size() > b.size() : a > b;
  });
  int left = keep - 1;
  for (const std::string& n : kept) {
    if (n == name) continue;
    if (left > 0) {
      --left;
      continue;
    }
    fs::remove_all(units + "/" + n, ec);
  }
  fs::remove(run_dir + "/" + kTrainerStateFile, ec);
}

int64_t committed_step(const std::string& run_dir) {
  try {
    const Manifest m = read_manifest(run_dir);
    if (m.step >= 0) return m.step;
  } catch (const Error&) {
    return -1;
  }
  return -1;
}

CommittedRunState load_run_state(const std::string& run_dir) {
  CommittedRunState s;
  const Manifest m = read_manifest(run_dir);
  const std::string dir = m.step >= 0 ? run_dir + "/" + m.dir : run_dir;
  s.checkpoint_path = dir + "/" + kCheckpointFile;
  s.trainer_state_path = dir + "/" + kTrainerStateFile;
  if (!fs::exists(s.trainer_state_path))
    throw Error("--resume " + run_dir + ": no " + (m.step >= 0 ? s.trainer_state_path : std::string(kTrainerStateFile)) +
                " (not a vkqat run directory, or no checkpoint was committed yet?)");
  s.trainer_state = read_safetensors(s.trainer_state_path);
  s.checkpoint = read_safetensors(s.checkpoint_path);
  return s;
}

}  // namespace vkqat::nn

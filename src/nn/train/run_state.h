#pragma once
// The run state on disk: what `vkqat train --resume` continues from. A kill at any instant
// (power loss included) leaves a run that resumes, because checkpoint and trainer state
// are committed as one unit:
//
//   RUN_DIR/checkpoints/step-<N>/{checkpoint,trainer_state}.safetensors   one saved unit
//   RUN_DIR/run_state.json      {"step": N, "dir": "checkpoints/step-<N>"}, the commit record
//   RUN_DIR/checkpoint.safetensors   the current checkpoint (a hard link to the unit's),
//                                    for tools and users (DESIGN.md's contract)
//
// Saving writes the unit into checkpoints/step-<N>.tmp (files fsynced), renames it into
// place, then replaces run_state.json atomically (the commit), then checkpoint.safetensors,
// then prunes units beyond --keep-checkpoints. Every file and directory is fsynced before
// the rename that publishes it. Runs from before this layout (trainer_state.safetensors
// beside checkpoint.safetensors, no run_state.json) still resume.
#include <cstdint>
#include <exception>
#include <string>

#include "nn/safetensors.h"

namespace vkqat::nn {

extern const char* const kCheckpointFile;    // "checkpoint.safetensors"
extern const char* const kTrainerStateFile;  // "trainer_state.safetensors"
extern const char* const kRunStateFile;      // "run_state.json"

// Writes checkpoint + trainer state of `step` as one unit (see above); keeps the last
// `keep` units (>= 1). Throws Error naming the path on any I/O failure; the previous
// committed unit is then untouched.
void commit_run_state(const std::string& run_dir, int64_t step, const SafeTensors& checkpoint,
                      const SafeTensors& trainer_state, int keep);

struct CommittedRunState {
  SafeTensors checkpoint, trainer_state;
  std::string checkpoint_path, trainer_state_path;
};
// The last committed unit of `run_dir` (or the pre-manifest pair of files).
CommittedRunState load_run_state(const std::string& run_dir);
// The step of the last committed unit, or -1 when nothing was committed yet (no throw).
int64_t committed_step(const std::string& run_dir);

// text -> path.tmp, fsync, rename over path, fsync the directory. Every failure (a full
// disk at write, flush or close included) throws Error naming the path.
void write_file_durably(const std::string& path, const std::string& text);

// Fault injection for the crash-safety tests: when the environment variable
// VKQAT_FAULT_AT is `point` (or `point@N`: the N-th pass through it in this process),
// throws InjectedFault, leaving the files exactly as a kill at that instant would. Points,
// in save order: checkpoint-written, unit-written, unit-renamed, manifest-written,
// checkpoint-published.
void fault_point(const char* point);
struct InjectedFault : std::exception {
  std::string point;
  explicit InjectedFault(std::string p) : point(std::move(p)) {}
  const char* what() const noexcept override { return "injected fault (VKQAT_FAULT_AT)"; }
};

// The first non-finite F32 value of `st`: its tensor's name, or "" when every value is finite.
std::string first_non_finite_tensor(const SafeTensors& st);

}  // namespace vkqat::nn

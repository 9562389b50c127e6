#pragma once
// Data-parallel training across processes: the few collective operations the trainer needs,
// behind a small interface so that nothing else includes mpi.h. Built with MPI
// (VKQAT_HAVE_MPI) and started by mpirun, these talk to the other ranks; otherwise the
// world is one process and every call is a no-op (or an identity).
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "nn/ops/batchnorm2d.h"

namespace vkqat::nn::dist {

// Initialises MPI when this process was started by mpirun/srun (their environment
// variables say so); does nothing otherwise. Throws Error when mpirun started several
// ranks of a binary built without MPI (they would all write the same run directory).
void init_if_launched(int* argc, char*** argv);
// MPI_Finalize if init_if_launched initialised MPI (idempotent).
void finalize();

bool built_with_mpi();
bool active();    // MPI initialised (also true for `mpirun -n 1`)
int rank();       // 0 when not active
int size();       // 1 when not active
int local_rank(); // rank among the processes on this host (device choice); 0 when not active

// Element-wise sum over all ranks, in place; the same fixed reduction on every call.
void allreduce_sum(float* data, size_t n);
// Every rank's n floats, in rank order, into recv (size() * n floats).
void allgather(const float* send, size_t n, float* recv);
// In place: the element-wise sum over the ranks, added in rank order (in double) on every
// rank, so every rank gets the same bits (small buffers: gathers them all).
void sum_in_rank_order(float* values, size_t n);
// Root's bytes to every rank.
void broadcast(void* data, size_t bytes, int root = 0);
void barrier();
// Stops every rank of the job (MPI_Abort); without MPI, std::exit(code).
[[noreturn]] void abort(int code);

// --sync-bn: batch-norm statistics over every rank's shard. Each exchange gathers the
// ranks' values and combines them in rank order on every rank, so that all ranks get the
// same bits (an MPI_Allreduce may sum in a different order on each rank).
class BatchNormExchange final : public BnStatsSync {
 public:
  int processes() const override { return size(); }
  void merge_moments(float* mean, float* var, int channels, double elements) override;
  void sum(float* values, size_t n) override;
  int64_t exchanges() const { return exchanges_; }
  double seconds() const { return seconds_; }  // in the exchanges (waiting for the slowest rank included)
  void reset_counts() { exchanges_ = 0, seconds_ = 0; }

 private:
  std::vector<float> send_, gathered_;
  int64_t exchanges_ = 0;
  double seconds_ = 0;
};

// Data-parallel gradient buckets: non-blocking in-place sums over the ranks, started while
// the backward goes on (MPI_Iallreduce on a communicator of their own, so that they pair
// with each other in start order whatever blocking collectives, such as --sync-bn's
// exchanges, run in between). Every rank must start the same buckets (same sizes) in the
// same order. Without MPI or with one rank every call returns at once.
class GradientBuckets {
 public:
  GradientBuckets();
  ~GradientBuckets();
  GradientBuckets(const GradientBuckets&) = delete;
  GradientBuckets& operator=(const GradientBuckets&) = delete;
  // Starts the sum of data[0, n) over the ranks, in place; data stays untouched by this
  // process until wait_all() returned.
  void start(float* data, size_t n);
  // MPI_Test on each pending sum: Open MPI advances a non-blocking collective only inside
  // MPI calls (no progress thread), so the host calls this while it waits for the device.
  void progress();
  // Blocks until every started sum completed; returns the seconds it blocked.
  double wait_all();
  // Summed over the buckets since reset_counts(): seconds from each start to when its
  // completion was seen (progress() or wait_all()); overlapping buckets count each.
  double in_flight_seconds() const;
  int64_t started() const;
  void reset_counts();

 private:
  struct State;
  std::unique_ptr<State> s_;
};

// "rank 1/4: " under MPI with several ranks, "" otherwise (message prefix).
std::string rank_prefix();

}  // namespace vkqat::nn::dist

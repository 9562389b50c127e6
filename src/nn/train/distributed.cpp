#include "nn/train/distributed.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>

#include "backend/error.h"

#ifdef VKQAT_HAVE_MPI
#define OMPI_SKIP_MPICXX 1  // the C API only (the C++ bindings are deprecated)
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#endif

namespace vkqat::nn::dist {
namespace {
bool g_active = false;
#ifdef VKQAT_HAVE_MPI
MPI_Comm g_bucket_comm = MPI_COMM_NULL;  // GradientBuckets' collectives (a duplicate of the world)
#endif
int g_rank = 0, g_size = 1, g_local_rank = 0;

// The launcher's world size from its environment (OpenMPI, PMIx, Slurm/MPICH PMI); 0 when
// this process was not started by a launcher.
int launcher_world_size() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "PMI_SIZE"})
    if (const char* s = std::getenv(v)) return std::max(1, std::atoi(s));
  if (std::getenv("PMIX_RANK")) return 1;
  return 0;
}
}  // namespace

bool built_with_mpi() {
#ifdef VKQAT_HAVE_MPI
  return true;
#else
  return false;
#endif
}

void init_if_launched(int* argc, char*** argv) {
  if (g_active) return;
  const int launched = launcher_world_size();
  if (launched == 0) return;
#ifdef VKQAT_HAVE_MPI
  int initialised = 0;
  MPI_Initialized(&initialised);
  if (!initialised) MPI_Init(argc, argv);
  // Errors in collectives end the job instead of returning codes nobody checks.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_ARE_FATAL);
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_size);
  MPI_Comm local;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, g_rank, MPI_INFO_NULL, &local);
  MPI_Comm_rank(local, &g_local_rank);
  MPI_Comm_free(&local);
  MPI_Comm_dup(MPI_COMM_WORLD, &g_bucket_comm);
  g_active = true;
#else
  (void)argc, (void)argv;
  if (launched > 1)
    throw Error("started by mpirun with " + std::to_string(launched) +
                " ranks, but this vkqat was built without MPI (install libopenmpi-dev and rebuild)");
#endif
}

void finalize() {
#ifdef VKQAT_HAVE_MPI
  if (!g_active) return;
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) {
    if (g_bucket_comm != MPI_COMM_NULL) MPI_Comm_free(&g_bucket_comm);
    MPI_Finalize();
  }
  g_active = false;
#endif
}

bool active() { return g_active; }
int rank() { return g_rank; }
int size() { return g_size; }
int local_rank() { return g_local_rank; }

void allreduce_sum(float* data, size_t n) {
#ifdef VKQAT_HAVE_MPI
  if (!g_active || g_size == 1) return;
  // MPI counts are int: large buffers go in pieces (each a deterministic reduction).
  constexpr size_t kChunk = size_t(1) << 30;
  for (size_t off = 0; off < n; off += kChunk)
    MPI_Allreduce(MPI_IN_PLACE, data + off, int(std::min(kChunk, n - off)), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
#else
  (void)data, (void)n;
#endif
}

void allgather(const float* send, size_t n, float* recv) {
#ifdef VKQAT_HAVE_MPI
  if (g_active && g_size > 1) {
    if (n > size_t(1) << 30) throw Error("allgather of " + std::to_string(n) + " floats: too many for one call");
    MPI_Allgather(send, int(n), MPI_FLOAT, recv, int(n), MPI_FLOAT, MPI_COMM_WORLD);
    return;
  }
#endif
  std::copy(send, send + n, recv);
}

void BatchNormExchange::merge_moments(float* mean, float* var, int channels, double elements) {
  const auto t0 = std::chrono::steady_clock::now();
  const size_t c = size_t(channels);
  send_.assign(mean, mean + c);
  send_.insert(send_.end(), var, var + c);
  gathered_.resize(send_.size() * size_t(size()));
  allgather(send_.data(), send_.size(), gathered_.data());
  // gathered_ is [rank][mean | var]: one rank's means and variances are 2c apart.
  std::vector<float> means(c * size_t(size())), vars(means.size());
  for (int r = 0; r < size(); ++r) {
    std::copy_n(gathered_.begin() + long(2 * c * size_t(r)), c, means.begin() + long(c * size_t(r)));
    std::copy_n(gathered_.begin() + long(2 * c * size_t(r) + c), c, vars.begin() + long(c * size_t(r)));
  }
  merge_channel_moments(means.data(), vars.data(), size(), channels, elements, mean, var);
  ++exchanges_;
  seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void sum_in_rank_order(float* values, size_t n) {
  if (g_size == 1) return;
  std::vector<float> gathered(n * size_t(g_size));
  allgather(values, n, gathered.data());
  for (size_t i = 0; i < n; ++i) {
    double s = 0;
    for (int r = 0; r < g_size; ++r) s += gathered[size_t(r) * n + i];
    values[i] = float(s);
  }
}

void BatchNormExchange::sum(float* values, size_t n) {
  const auto t0 = std::chrono::steady_clock::now();
  sum_in_rank_order(values, n);
  ++exchanges_;
  seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void broadcast(void* data, size_t bytes, int root) {
#ifdef VKQAT_HAVE_MPI
  if (!g_active || g_size == 1) return;
  constexpr size_t kChunk = size_t(1) << 30;
  for (size_t off = 0; off < bytes; off += kChunk)
    MPI_Bcast(static_cast<char*>(data) + off, int(std::min(kChunk, bytes - off)), MPI_BYTE, root, MPI_COMM_WORLD);
#else
  (void)data, (void)bytes, (void)root;
#endif
}

void barrier() {
#ifdef VKQAT_HAVE_MPI
  if (g_active) MPI_Barrier(MPI_COMM_WORLD);
#endif
}

void abort(int code) {
  std::fflush(stdout);
  std::fflush(stderr);
#ifdef VKQAT_HAVE_MPI
  if (g_active) MPI_Abort(MPI_COMM_WORLD, code);
#endif
  std::exit(code);
}

struct GradientBuckets::State {
  using Clock = std::chrono::steady_clock;
#ifdef VKQAT_HAVE_MPI
  std::vector<MPI_Request> requests;  // MPI_REQUEST_NULL once completed
#endif
  std::vector<Clock::time_point> started_at;
  double in_flight = 0;
  int64_t started = 0;
  void completed(size_t i) { in_flight += std::chrono::duration<double>(Clock::now() - started_at[i]).count(); }
};

GradientBuckets::GradientBuckets() : s_(std::make_unique<State>()) {}

// Requests still pending (an error mid-step) are left to MPI_Abort, which every error under
// mpirun ends in (Trainer::run).
GradientBuckets::~GradientBuckets() = default;

void GradientBuckets::start(float* data, size_t n) {
  ++s_->started;
#ifdef VKQAT_HAVE_MPI
  if (!g_active || g_size == 1) return;
  constexpr size_t kChunk = size_t(1) << 30;  // MPI counts are int
  for (size_t off = 0; off < n; off += kChunk) {
    s_->requests.push_back(MPI_REQUEST_NULL);
    s_->started_at.push_back(State::Clock::now());
    MPI_Iallreduce(MPI_IN_PLACE, data + off, int(std::min(kChunk, n - off)), MPI_FLOAT, MPI_SUM, g_bucket_comm,
                   &s_->requests.back());
  }
#else
  (void)data, (void)n;
#endif
}

void GradientBuckets::progress() {
#ifdef VKQAT_HAVE_MPI
  for (size_t i = 0; i < s_->requests.size(); ++i) {
    if (s_->requests[i] == MPI_REQUEST_NULL) continue;
    int done = 0;
    MPI_Test(&s_->requests[i], &done, MPI_STATUS_IGNORE);  // sets the request to MPI_REQUEST_NULL when done
    if (done) s_->completed(i);
  }
#endif
}

double GradientBuckets::wait_all() {
  const auto t0 = State::Clock::now();
#ifdef VKQAT_HAVE_MPI
  for (size_t i = 0; i < s_->requests.size(); ++i) {
    if (s_->requests[i] == MPI_REQUEST_NULL) continue;
    MPI_Wait(&s_->requests[i], MPI_STATUS_IGNORE);
    s_->completed(i);
  }
  s_->requests.clear();
#endif
  s_->started_at.clear();
  return std::chrono::duration<double>(State::Clock::now() - t0).count();
}

double GradientBuckets::in_flight_seconds() const { return s_->in_flight; }
int64_t GradientBuckets::started() const { return s_->started; }
void GradientBuckets::reset_counts() { s_->in_flight = 0, s_->started = 0; }

std::string rank_prefix() {
  if (g_size <= 1) return "";
  return "rank " + std::to_string(g_rank) + "/" + std::to_string(g_size) + ": ";
}

}  // namespace vkqat::nn::dist

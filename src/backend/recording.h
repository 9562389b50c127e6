#pragma once
// A sequence of dispatches and copies recorded once into a command buffer and replayed
// with run() as often as needed (a training step is one Recording). The recorder tracks
// which byte ranges each command reads and writes (from kernel reflection) and inserts a
// pipeline barrier only where a hazard exists (RAW, WAR, WAW), ncnn-style. Copies and fills
// (transfer stage) may interleave with dispatches (compute stage) in any order: each stage
// keeps its own list of accesses not yet ordered before it (see track()).
// VKQAT_FULL_BARRIERS=1 puts a full barrier after every command instead (debugging).
#include <vulkan/vulkan.h>

#include <array>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <map>
#include <string>
#include <type_traits>
#include <vector>

#include "backend/memory.h"

namespace vkqat {

class Context;
class Kernel;

struct Groups {
  uint32_t x = 1, y = 1, z = 1;
};

// What one dispatch launched (for occupancy reports): kept for every dispatch, in order.
struct DispatchShape {
  std::string kernel, label;
  Groups groups;
  std::array<uint32_t, 3> local{1, 1, 1};
  uint64_t bytes_bound = 0;  // sum of the bound views' sizes: an upper bound on bytes moved
  double flops = 0;          // set by the op (annotate_flops), 0 when it did not say
  uint64_t workgroups() const { return uint64_t(groups.x) * groups.y * groups.z; }
  uint32_t invocations_per_workgroup() const { return local[0] * local[1] * local[2]; }
};

struct DispatchTiming {
  std::string label;
  double ms = 0;  // GPU time from the previous timestamp to the end of this command
};

// GPU time summed over the commands that share a label, the grouping `vkqat train
// --profile` prints and vkqat-viz draws (one function, so the two always agree).
struct LabelTime {
  std::string label;
  double ms = 0;
  int commands = 0;
};
std::vector<LabelTime> group_by_label(const std::vector<DispatchTiming>& timings);  // largest first

class Recording {
 public:
  // profile: write a timestamp after every command (see timings()).
  explicit Recording(Context& ctx, bool profile = false);
  ~Recording();
  Recording(const Recording&) = delete;
  Recording& operator=(const Recording&) = delete;

  // Binds `buffers` to bindings 0..n-1 of the kernel in order, pushes `push` (its size must
  // equal the kernel's push-constant block) and dispatches. Group counts beyond the
  // device's maxComputeWorkGroupCount are split into several vkCmdDispatchBase calls, so
  // shaders may rely on gl_GlobalInvocationID / gl_WorkGroupID being global.
  void dispatch(const Kernel& k, const std::vector<BufferView>& buffers, const void* push,
                uint32_t push_bytes, Groups groups, const char* label = nullptr);
  template <class P>
  void dispatch(const Kernel& k, const std::vector<BufferView>& buffers, const P& push,
                Groups groups, const char* label = nullptr) {
    static_assert(std::is_trivially_copyable_v<P>, "push constants must be plain data");
    dispatch(k, buffers, &push, sizeof(P), groups, label);
  }
  // Same, with the group count derived from a total number of invocations along x.
  template <class P>
  void dispatch_1d(const Kernel& k, const std::vector<BufferView>& buffers, const P& push,
                   uint64_t invocations, const char* label = nullptr) {
    dispatch(k, buffers, push, groups_for(k, invocations), label);
  }
  static Groups groups_for(const Kernel& k, uint64_t invocations_x, uint64_t invocations_y = 1,
                           uint64_t invocations_z = 1);

  // Memory that lives as long as the recording, for an op's intermediate results (split-K
  // partial sums; host-visible: values the host exchanges in a host_step). Every call
  // returns new memory.
  BufferView transient(uint64_t bytes, MemoryKind kind = MemoryKind::Device);
  // Splits the recording here: a replay runs the commands recorded so far, waits for them,
  // calls on_host (which may read what they wrote to host-visible memory and write
  // host-visible memory that later commands read), then goes on with the commands recorded
  // after. For a host computation inside a step (data-parallel batch-norm statistics); each
  // split costs a submit and a wait.
  void host_step(std::function<void()> on_host);
  // Splits the recording like host_step, but a replay does not wait here: the commands
  // after the split are submitted at once and the device goes on with them, while
  // on_host runs once the commands before the split have completed (in submit() or
  // wait(), in recording order with the other host steps, each segment with its own
  // fence). on_host may read what the earlier commands wrote to host-visible memory; it
  // must not write anything the later commands of this recording read (they may already
  // run). For starting work on the host that overlaps the rest of the step (data-parallel
  // gradient buckets: a bucket's all-reduce starts while the backward goes on).
  void host_step_async(std::function<void()> on_host);
  size_t host_step_count() const { return host_steps_.size(); }
  // Called repeatedly (about every kPollMicroseconds) while the host waits for this
  // recording's fences in submit() and wait(): MPI's non-blocking collectives advance only
  // inside MPI calls, so whoever started one lets it progress here.
  static constexpr int kPollMicroseconds = 200;
  void while_waiting(std::function<void()> poll) { while_waiting_ = std::move(poll); }

  // Commands counted from 0 in recording order, leaving out those recorded by at_command's
  // functions: the same calls record the same indices with or without hooks, so a first
  // recording can find where to split a second one (command_index() is the next index).
  size_t command_index() const { return outer_commands_; }
  // The index of the last command recorded so far that writes any byte of v (a dispatch
  // binding it writable, a copy or fill into it), or -1 when none did.
  int64_t last_writer(const BufferView& v) const;
  // Runs fn during recording, right after command `index` is recorded (several functions
  // at one index run in the order given). For recording a split at a point found in a
  // first recording of the same calls.
  void at_command(size_t index, std::function<void()> fn);
  void copy(const BufferView& src, const BufferView& dst, const char* label = nullptr);
  void fill(const BufferView& dst, uint32_t word, const char* label = nullptr);  // size % 4 == 0

  // A barrier from every earlier submission on the queue to this recording's commands: a
  // replay that is submitted before the previous one completed (submit() without wait())
  // then still starts after it. Call before the first command.
  void order_after_earlier_submissions();

  // Ends recording (adds the barrier that makes results visible to the host).
  void finish();
  // Submits and waits. Records nothing new: the same command buffer every time.
  void run();
  // run() in two halves: submit() returns at once, or after the last blocking host_step
  // (this recording's own fences signal completion); wait() runs the host steps still due,
  // blocks until the last segment completed and returns the seconds it took. A recording
  // is submitted again only after wait(); the destructor waits for one still in flight.
  void submit();
  double wait();
  bool in_flight() const { return in_flight_; }

  Context& context() const { return ctx_; }
  bool finished() const { return finished_; }
  size_t command_count() const { return labels_.size(); }
  size_t barrier_count() const { return barriers_; }
  // Per-command GPU times of the last run() (profile mode only), in recording order: one
  // entry per command, labels_[i] with the time between timestamps i and i+1.
  std::vector<DispatchTiming> timings() const;
  // Whether the last run() timed every command with timestamps that never go backwards
  // (false before the first run, without profile mode, or when the driver's timestamps
  // are out of order: then timings() is not to be trusted).
  bool timings_complete() const;
  // Every dispatch recorded so far, in order (copies and fills are not in it).
  const std::vector<DispatchShape>& dispatch_shapes() const { return dispatch_shapes_; }
  // The floating-point operations of dispatch `index` (of dispatch_shapes()), for the
  // occupancy report; ops that know their FLOPs (convolutions) set it.
  void annotate_flops(size_t index, double flops) {
    if (index < dispatch_shapes_.size()) dispatch_shapes_[index].flops = flops;
  }

 private:
  struct Access {
    VkBuffer buffer;
    uint64_t begin, end;
  };
  enum Stage : uint32_t { kCompute = 1, kTransfer = 2 };
  void track(const std::vector<Access>& reads, const std::vector<Access>& writes, Stage stage);
  void after_command(const char* label, Stage stage);
  void write_timestamp(uint32_t index, VkPipelineStageFlagBits stage);
  void barrier_to_host();
  void submit_segment(VkCommandBuffer cmd, VkFence fence);
  void split_segment(std::function<void()> on_host, bool async);
  VkFence segment_fence(size_t segment);  // segments_.size(): the last segment's
  void wait_fence(VkFence fence);
  void run_host_steps_through(size_t last);
  void check_view(const BufferView& v, const char* what) const;
  VkDescriptorSet allocate_set(const Kernel& k);

  Context& ctx_;
  VkCommandBuffer cmd_ = VK_NULL_HANDLE;  // the one being recorded: the last segment
  // Segments recorded before each host_step, in order: segments_[i], then host_steps_[i].
  std::vector<VkCommandBuffer> segments_;
  struct HostStep {
    std::function<void()> fn;
    bool async = false;
  };
  std::vector<HostStep> host_steps_;
  // One fence per segment (created by the first submit()): an async host step waits for
  // its own segment while later ones may already be submitted.
  std::vector<VkFence> fences_;
  std::vector<VkFence> unwaited_;  // submitted, not yet waited for (the destructor waits)
  size_t next_host_step_ = 0;      // of the replay in flight
  std::function<void()> while_waiting_;
  bool in_flight_ = false;
  size_t outer_commands_ = 0;
  bool in_hook_ = false;
  struct Written {
    Access range;
    size_t command;  // outer index
  };
  std::vector<Written> written_;
  std::multimap<size_t, std::function<void()>> hooks_;
  std::vector<VkDescriptorPool> pools_;
  uint32_t sets_left_in_pool_ = 0;
  // Timestamp queries in pools of kQueriesPerPool, added as commands are recorded, so a
  // step of any length is timed whole (index i lives in pool i / kQueriesPerPool).
  std::vector<VkQueryPool> query_pools_;
  bool profile_ = false, full_barriers_ = false, finished_ = false;
  // Accesses that no barrier has yet ordered before later commands of a stage:
  // pending_[s] for the destination stage s (0 compute, 1 transfer). A barrier whose
  // destination is stage s empties pending_[s] only; the other stage keeps its list.
  struct PendingSet {
    std::vector<Access> reads, writes;
    uint32_t read_stages = 0, write_stages = 0;  // Stage bits of the accesses in the lists
  };
  PendingSet pending_[2];
  size_t barriers_ = 0;
  std::vector<std::string> labels_;
  std::vector<uint64_t> last_timestamps_;
  std::vector<Buffer> transients_;
  std::vector<DispatchShape> dispatch_shapes_;  // per dispatch, apart from labels_/timestamps
};

}  // namespace vkqat

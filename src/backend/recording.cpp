#include "backend/recording.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>

#include "backend/context.h"
#include "backend/error.h"
#include "backend/kernel.h"

namespace vkqat {
namespace {
constexpr uint32_t kSetsPerPool = 256;
constexpr uint32_t kQueriesPerPool = 1024;

VkPipelineStageFlags stages_of(uint32_t s) {
  VkPipelineStageFlags f = 0;
  if (s & 1) f |= VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT;
  if (s & 2) f |= VK_PIPELINE_STAGE_TRANSFER_BIT;
  return f;
}
VkAccessFlags writes_of(uint32_t s) {
  VkAccessFlags f = 0;
  if (s & 1) f |= VK_ACCESS_SHADER_WRITE_BIT;
  if (s & 2) f |= VK_ACCESS_TRANSFER_WRITE_BIT;
  return f;
}
VkAccessFlags all_of(uint32_t s) {
  VkAccessFlags f = 0;
  if (s & 1) f |= VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT;
  if (s & 2) f |= VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT;
  return f;
}
}  // namespace

namespace {
VkCommandBuffer begin_command_buffer(Context& ctx) {
  VkCommandBufferAllocateInfo ai{VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
  ai.commandPool = ctx.command_pool();
  ai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
  ai.commandBufferCount = 1;
  VkCommandBuffer cmd;
  vk_check(vkAllocateCommandBuffers(ctx.device(), &ai, &cmd), "vkAllocateCommandBuffers");
  VkCommandBufferBeginInfo bi{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
  vk_check(vkBeginCommandBuffer(cmd, &bi), "vkBeginCommandBuffer");
  return cmd;
}
}  // namespace

Recording::Recording(Context& ctx, bool profile) : ctx_(ctx) {
  profile_ = profile && ctx.info().timestamps;
  const char* fb = std::getenv("VKQAT_FULL_BARRIERS");
  full_barriers_ = fb && *fb && std::strcmp(fb, "0") != 0;
  cmd_ = begin_command_buffer(ctx);
  if (profile_) write_timestamp(0, VK_PIPELINE_STAGE_TOP_OF_PIPE_BIT);
}

Recording::~Recording() {
  VkDevice dev = ctx_.device();
  // Freeing a command buffer the device still executes is undefined: wait (no throwing here).
  if (!unwaited_.empty()) vkWaitForFences(dev, uint32_t(unwaited_.size()), unwaited_.data(), VK_TRUE, UINT64_MAX);
  for (VkFence f : fences_) vkDestroyFence(dev, f, nullptr);
  if (cmd_) vkFreeCommandBuffers(dev, ctx_.command_pool(), 1, &cmd_);
  for (VkCommandBuffer c : segments_) vkFreeCommandBuffers(dev, ctx_.command_pool(), 1, &c);
  for (VkDescriptorPool p : pools_) vkDestroyDescriptorPool(dev, p, nullptr);
  for (VkQueryPool p : query_pools_) vkDestroyQueryPool(dev, p, nullptr);
}

Groups Recording::groups_for(const Kernel& k, uint64_t ix, uint64_t iy, uint64_t iz) {
  auto l = k.local_size();
  auto div = [](uint64_t a, uint64_t b) { return uint32_t(std::max<uint64_t>(1, (a + b - 1) / b)); };
  return {div(ix, l[0]), div(iy, l[1]), div(iz, l[2])};
}

VkDescriptorSet Recording::allocate_set(const Kernel& k) {
  // One pool per Recording (grown in chunks), never one per object: sets live as long as
  // the recording that replays them.
  if (sets_left_in_pool_ == 0) {
    VkDescriptorPoolSize size{VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, kSetsPerPool * 8};
    VkDescriptorPoolCreateInfo pi{VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO};
    pi.maxSets = kSetsPerPool;
    pi.poolSizeCount = 1;
    pi.pPoolSizes = &size;
    VkDescriptorPool pool;
    vk_check(vkCreateDescriptorPool(ctx_.device(), &pi, nullptr, &pool), "vkCreateDescriptorPool");
    pools_.push_back(pool);
    sets_left_in_pool_ = kSetsPerPool;
  }
  VkDescriptorSetLayout layout = k.set_layout();
  VkDescriptorSetAllocateInfo ai{VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO};
  ai.descriptorPool = pools_.back();
  ai.descriptorSetCount = 1;
  ai.pSetLayouts = &layout;
  VkDescriptorSet set;
  VkResult r = vkAllocateDescriptorSets(ctx_.device(), &ai, &set);
  if (r == VK_ERROR_OUT_OF_POOL_MEMORY || r == VK_ERROR_FRAGMENTED_POOL) {
    sets_left_in_pool_ = 0;  // more than 8 bindings per set on average: open a new pool
    return allocate_set(k);
  }
  vk_check(r, "vkAllocateDescriptorSets");
  --sets_left_in_pool_;
  return set;
}

void Recording::check_view(const BufferView& v, const char* what) const {
  if (!v.valid()) throw Error(std::string(what) + ": unbound (empty) buffer");
  const DeviceInfo& info = ctx_.info();
  if (info.min_storage_offset_alignment && v.offset % info.min_storage_offset_alignment)
    throw Error(std::string(what) + ": buffer offset " + std::to_string(v.offset) +
                " is not a multiple of minStorageBufferOffsetAlignment " +
                std::to_string(info.min_storage_offset_alignment));
  if (v.size > info.max_storage_buffer_range)
    throw Error(std::string(what) + ": buffer of " + std::to_string(v.size) +
                " bytes exceeds the device's maxStorageBufferRange " + std::to_string(info.max_storage_buffer_range));
}

void Recording::track(const std::vector<Access>& reads, const std::vector<Access>& writes, Stage stage) {
  auto overlaps = [](const Access& a, const std::vector<Access>& set) {
    for (const Access& b : set)
      if (a.buffer == b.buffer && a.begin < b.end && b.begin < a.end) return true;
    return false;
  };
  // Only accesses not yet ordered before this command's stage can conflict with it.
  PendingSet& mine = pending_[stage == kCompute ? 0 : 1];
  bool hazard = full_barriers_;
  for (const Access& r : reads) hazard = hazard || overlaps(r, mine.writes);  // read after write
  for (const Access& w : writes)
    hazard = hazard || overlaps(w, mine.writes) || overlaps(w, mine.reads);  // WAW, WAR
  if (hazard && (mine.write_stages | mine.read_stages)) {
    // One global memory barrier from every stage with an access still unordered before
    // `stage` to `stage`: everything recorded so far is then ordered before (and its writes
    // visible to) later commands of this stage, so this stage's list restarts empty. The
    // other stage's list is untouched: its commands are not in this barrier's second scope
    // (a dispatch -> copy -> dispatch chain needs a barrier before the copy and another
    // before the second dispatch).
    VkMemoryBarrier mb{VK_STRUCTURE_TYPE_MEMORY_BARRIER};
    mb.srcAccessMask = writes_of(mine.write_stages);
    mb.dstAccessMask = all_of(stage);
    vkCmdPipelineBarrier(cmd_, stages_of(mine.write_stages | mine.read_stages), stages_of(stage), 0, 1, &mb, 0,
                         nullptr, 0, nullptr);
    ++barriers_;
    mine = PendingSet{};
  }
  // Outer index of this command (commands recorded by a hook count as the one it follows).
  const size_t index = in_hook_ ? outer_commands_ - 1 : outer_commands_;
  for (const Access& w : writes) written_.push_back({w, index});
  for (PendingSet& p : pending_) {
    p.reads.insert(p.reads.end(), reads.begin(), reads.end());
    p.writes.insert(p.writes.end(), writes.begin(), writes.end());
    if (!reads.empty()) p.read_stages |= stage;
    if (!writes.empty()) p.write_stages |= stage;
  }
}

void Recording::write_timestamp(uint32_t index, VkPipelineStageFlagBits stage) {
  if (index / kQueriesPerPool >= query_pools_.size()) {
    VkQueryPoolCreateInfo qi{VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO};
    qi.queryType = VK_QUERY_TYPE_TIMESTAMP;
    qi.queryCount = kQueriesPerPool;
    VkQueryPool pool;
    vk_check(vkCreateQueryPool(ctx_.device(), &qi, nullptr, &pool), "vkCreateQueryPool");
    query_pools_.push_back(pool);
    vkCmdResetQueryPool(cmd_, pool, 0, kQueriesPerPool);  // before its first write, every replay
  }
  vkCmdWriteTimestamp(cmd_, stage, query_pools_[index / kQueriesPerPool], index % kQueriesPerPool);
}

void Recording::after_command(const char* label, Stage) {
  labels_.emplace_back(label ? label : "");
  // Timestamp i + 1 closes command i (timestamp 0 opens the recording).
  if (profile_) write_timestamp(uint32_t(labels_.size()), VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT);
  if (in_hook_) return;
  const size_t index = outer_commands_++;
  const auto [first, last] = hooks_.equal_range(index);
  if (first == last) return;
  in_hook_ = true;  // the hooks' own commands get no index
  struct HookScope {
    bool& flag;
    ~HookScope() { flag = false; }  // also when a hook throws
  } scope{in_hook_};
  for (auto it = first; it != last; ++it) it->second();
}

int64_t Recording::last_writer(const BufferView& v) const {
  int64_t last = -1;
  for (const Written& w : written_)
    if (w.range.buffer == v.buffer && w.range.begin < v.offset + v.size && v.offset < w.range.end)
      last = std::max(last, int64_t(w.command));
  return last;
}

void Recording::at_command(size_t index, std::function<void()> fn) {
  if (finished_) throw Error("Recording: at_command after finish()");
  if (index < outer_commands_)
    throw Error("Recording: at_command(" + std::to_string(index) + ") after that command was recorded");
  hooks_.emplace(index, std::move(fn));
}

void Recording::dispatch(const Kernel& k, const std::vector<BufferView>& buffers, const void* push,
                         uint32_t push_bytes, Groups groups, const char* label) {
  if (finished_) throw Error("Recording: dispatch after finish()");
  const std::string what = "dispatch of " + k.name();
  if (buffers.size() != k.bindings().size())
    throw Error(what + ": " + std::to_string(buffers.size()) + " buffers given, the shader declares " +
                std::to_string(k.bindings().size()));
  if (push_bytes != k.push_constant_bytes())
    throw Error(what + ": push constants of " + std::to_string(push_bytes) + " bytes, the shader declares " +
                std::to_string(k.push_constant_bytes()));

  VkDescriptorSet set = allocate_set(k);
  std::vector<VkDescriptorBufferInfo> infos(buffers.size());
  std::vector<VkWriteDescriptorSet> writes(buffers.size());
  std::vector<Access> reads, wr;
  size_t i = 0;
  for (const BufferView& v : buffers) {
    const BindingInfo& b = k.bindings()[i];
    check_view(v, (what + " binding " + std::to_string(i) + " (" + b.name + ")").c_str());
    infos[i] = {v.buffer, v.offset, v.size};
    writes[i] = {VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET};
    writes[i].dstSet = set;
    writes[i].dstBinding = uint32_t(i);
    writes[i].descriptorCount = 1;
    writes[i].descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
    writes[i].pBufferInfo = &infos[i];
    Access a{v.buffer, v.offset, v.offset + v.size};
    if (b.reads) reads.push_back(a);
    if (b.writes) wr.push_back(a);
    ++i;
  }
  vkUpdateDescriptorSets(ctx_.device(), uint32_t(writes.size()), writes.data(), 0, nullptr);
  track(reads, wr, kCompute);
  DispatchShape shape{k.name(), label ? label : k.name(), groups, k.local_size(), 0, 0};
  for (size_t j = 0; j < buffers.size(); ++j) {  // a tensor bound twice (float and vec4 views) counts once
    bool seen = false;
    for (size_t m = 0; m < j; ++m) seen = seen || (buffers[m].buffer == buffers[j].buffer && buffers[m].offset == buffers[j].offset);
    if (!seen) shape.bytes_bound += buffers[j].size;
  }
  dispatch_shapes_.push_back(std::move(shape));

  vkCmdBindPipeline(cmd_, VK_PIPELINE_BIND_POINT_COMPUTE, k.pipeline());
  vkCmdBindDescriptorSets(cmd_, VK_PIPELINE_BIND_POINT_COMPUTE, k.layout(), 0, 1, &set, 0, nullptr);
  if (push_bytes) vkCmdPushConstants(cmd_, k.layout(), VK_SHADER_STAGE_COMPUTE_BIT, 0, push_bytes, push);
  // Split along each axis at the device's group-count limit; base offsets keep IDs global.
  const auto& maxc = ctx_.info().max_workgroup_count;
  for (uint32_t z = 0; z < groups.z; z += maxc[2])
    for (uint32_t y = 0; y < groups.y; y += maxc[1])
      for (uint32_t x = 0; x < groups.x; x += maxc[0])
        vkCmdDispatchBase(cmd_, x, y, z, std::min(maxc[0], groups.x - x), std::min(maxc[1], groups.y - y),
                          std::min(maxc[2], groups.z - z));
  after_command(label ? label : k.name().c_str(), kCompute);
}

BufferView Recording::transient(uint64_t bytes, MemoryKind kind) {
  transients_.push_back(ctx_.alloc(bytes, kind));
  return transients_.back().view();
}

void Recording::host_step(std::function<void()> on_host) { split_segment(std::move(on_host), false); }

void Recording::host_step_async(std::function<void()> on_host) { split_segment(std::move(on_host), true); }

void Recording::split_segment(std::function<void()> on_host, bool async) {
  if (finished_) throw Error("Recording: host_step after finish()");
  if (!on_host) throw Error("Recording: host_step without a function");
  // The segment's writes become visible to on_host; the accesses still pending stay in
  // pending_: a barrier recorded in a later segment orders every command submitted before
  // it (submission order), so hazards across the split are handled as within a segment.
  // Host writes before the next segment's submit are visible to it (vkQueueSubmit's
  // host-write guarantee; host memory is coherent).
  barrier_to_host();
  vk_check(vkEndCommandBuffer(cmd_), "vkEndCommandBuffer");
  segments_.push_back(cmd_);
  host_steps_.push_back({std::move(on_host), async});
  cmd_ = VK_NULL_HANDLE;  // the destructor frees segments_ and a non-null cmd_
  cmd_ = begin_command_buffer(ctx_);
}

void Recording::copy(const BufferView& src, const BufferView& dst, const char* label) {
  if (finished_) throw Error("Recording: copy after finish()");
  if (src.size != dst.size)
    throw Error("copy: source has " + std::to_string(src.size) + " bytes, destination " + std::to_string(dst.size));
  track({{src.buffer, src.offset, src.offset + src.size}}, {{dst.buffer, dst.offset, dst.offset + dst.size}}, kTransfer);
  VkBufferCopy region{src.offset, dst.offset, src.size};
  vkCmdCopyBuffer(cmd_, src.buffer, dst.buffer, 1, &region);
  after_command(label ? label : "copy", kTransfer);
}

void Recording::fill(const BufferView& dst, uint32_t word, const char* label) {
  if (finished_) throw Error("Recording: fill after finish()");
  if (dst.size % 4 || dst.offset % 4) throw Error("fill: size and offset must be multiples of 4 bytes");
  track({}, {{dst.buffer, dst.offset, dst.offset + dst.size}}, kTransfer);
  vkCmdFillBuffer(cmd_, dst.buffer, dst.offset, dst.size, word);
  after_command(label ? label : "fill", kTransfer);
}

void Recording::barrier_to_host() {
  VkMemoryBarrier mb{VK_STRUCTURE_TYPE_MEMORY_BARRIER};
  mb.srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT;
  mb.dstAccessMask = VK_ACCESS_HOST_READ_BIT;
  vkCmdPipelineBarrier(cmd_, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
                       VK_PIPELINE_STAGE_HOST_BIT, 0, 1, &mb, 0, nullptr, 0, nullptr);
}

void Recording::finish() {
  if (finished_) return;
  if (!hooks_.empty() && hooks_.rbegin()->first >= outer_commands_)
    throw Error("Recording: at_command(" + std::to_string(hooks_.rbegin()->first) + ") but only " +
                std::to_string(outer_commands_) + " commands were recorded (the hook's recording differs)");
  // Make every write visible to the host (readbacks after run()) and order the next
  // replay's commands after this one's (the same buffers are reused every step).
  barrier_to_host();
  vk_check(vkEndCommandBuffer(cmd_), "vkEndCommandBuffer");
  finished_ = true;
}

void Recording::order_after_earlier_submissions() {
  if (finished_ || !labels_.empty()) throw Error("Recording: order_after_earlier_submissions() after a command");
  VkMemoryBarrier mb{VK_STRUCTURE_TYPE_MEMORY_BARRIER};
  mb.srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT;
  mb.dstAccessMask = all_of(kCompute | kTransfer);
  vkCmdPipelineBarrier(cmd_, stages_of(kCompute | kTransfer), stages_of(kCompute | kTransfer), 0, 1, &mb, 0, nullptr,
                       0, nullptr);
  ++barriers_;
}

void Recording::run() {
  submit();
  wait();
}

VkFence Recording::segment_fence(size_t segment) {
  while (fences_.size() <= segment) {
    VkFenceCreateInfo fi{VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    VkFence f;
    vk_check(vkCreateFence(ctx_.device(), &fi, nullptr, &f), "vkCreateFence");
    fences_.push_back(f);
  }
  return fences_[segment];
}

void Recording::submit_segment(VkCommandBuffer cmd, VkFence fence) {
  ctx_.submit(cmd, fence);
  unwaited_.push_back(fence);
}

void Recording::wait_fence(VkFence fence) {
  VkDevice dev = ctx_.device();
  VkResult r;
  if (while_waiting_) {
    while ((r = vkWaitForFences(dev, 1, &fence, VK_TRUE, uint64_t(kPollMicroseconds) * 1000)) == VK_TIMEOUT)
      while_waiting_();
  } else {
    r = vkWaitForFences(dev, 1, &fence, VK_TRUE, UINT64_MAX);
  }
  unwaited_.erase(std::find(unwaited_.begin(), unwaited_.end(), fence));
  vkResetFences(dev, 1, &fence);
  vk_check(r, "vkWaitForFences");
}

// Host steps run strictly in recording order (they may be collectives that every rank must
// call in the same order), each once its own segment has completed.
void Recording::run_host_steps_through(size_t last) {
  for (; next_host_step_ <= last && next_host_step_ < host_steps_.size(); ++next_host_step_) {
    wait_fence(segment_fence(next_host_step_));
    host_steps_[next_host_step_].fn();
  }
}

void Recording::submit() {
  if (in_flight_) throw Error("Recording: submit() while the previous submission is in flight (wait() first)");
  if (!finished_) finish();
  in_flight_ = true;
  next_host_step_ = 0;
  // A segment before a host_step runs to completion (with every host step before it) before
  // the next is submitted; after a host_step_async the next is submitted at once, and the
  // host step runs when the host next waits (here or in wait()). Timestamps of the earlier
  // segments are read with the last one's in wait().
  for (size_t i = 0; i < segments_.size(); ++i) {
    submit_segment(segments_[i], segment_fence(i));
    if (!host_steps_[i].async) run_host_steps_through(i);
  }
  submit_segment(cmd_, segment_fence(segments_.size()));
}

double Recording::wait() {
  if (!in_flight_) return 0;
  const auto t0 = std::chrono::steady_clock::now();
  run_host_steps_through(host_steps_.size());
  wait_fence(segment_fence(segments_.size()));
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  in_flight_ = false;
  if (profile_) {
    const size_t n = labels_.size() + 1;
    last_timestamps_.assign(n, 0);
    for (size_t first = 0; first < n; first += kQueriesPerPool) {
      const uint32_t count = uint32_t(std::min<size_t>(kQueriesPerPool, n - first));
      vk_check(vkGetQueryPoolResults(ctx_.device(), query_pools_[first / kQueriesPerPool], 0, count,
                                     count * sizeof(uint64_t), last_timestamps_.data() + first, sizeof(uint64_t),
                                     VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT),
               "vkGetQueryPoolResults");
    }
  }
  return waited;
}

std::vector<DispatchTiming> Recording::timings() const {
  std::vector<DispatchTiming> out;
  for (size_t i = 1; i < last_timestamps_.size(); ++i) {
    // A timestamp earlier than the one before it (an out-of-order driver) counts as 0 ms;
    // timings_complete() says so.
    const uint64_t ticks = last_timestamps_[i] >= last_timestamps_[i - 1] ? last_timestamps_[i] - last_timestamps_[i - 1] : 0;
    out.push_back({labels_[i - 1], double(ticks) * ctx_.info().timestamp_period_ns * 1e-6});
  }
  return out;
}

bool Recording::timings_complete() const {
  if (!profile_ || last_timestamps_.size() != labels_.size() + 1) return false;
  return std::is_sorted(last_timestamps_.begin(), last_timestamps_.end());
}

std::vector<LabelTime> group_by_label(const std::vector<DispatchTiming>& timings) {
  std::vector<LabelTime> out;
  std::map<std::string, size_t> row;
  for (const DispatchTiming& t : timings) {
    auto [it, added] = row.emplace(t.label, out.size());
    if (added) out.push_back({t.label, 0, 0});
    out[it->second].ms += t.ms, ++out[it->second].commands;
  }
  std::stable_sort(out.begin(), out.end(), [](const LabelTime& a, const LabelTime& b) { return a.ms > b.ms; });
  return out;
}

}  // namespace vkqat

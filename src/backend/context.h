#pragma once
// Vulkan instance + one logical device with a compute queue, what the device can do,
// and the services every op needs: memory, staging, kernels.
#include <vulkan/vulkan.h>

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "backend/memory.h"

namespace vkqat {

class Kernel;
class KernelCache;

// Everything we record about a physical device (printed by `vkqat devices`).
struct DeviceInfo {
  int index = -1;
  std::string name, type;  // type: "discrete", "integrated", "virtual", "cpu", "other"
  std::string driver_name, driver_info;
  uint32_t api_version = 0, vendor_id = 0, device_id = 0;
  std::array<uint8_t, VK_UUID_SIZE> pipeline_cache_uuid{};
  uint32_t subgroup_size = 0, min_subgroup_size = 0, max_subgroup_size = 0;
  // VK_EXT_subgroup_size_control (or 1.3) with computeFullSubgroups and compute in
  // requiredSubgroupSizeStages: kernels may then request a subgroup size (Context::kernel).
  bool subgroup_size_control = false;
  bool subgroup_shuffle = false, subgroup_arithmetic = false;  // supported in compute shaders
  bool shader_float16 = false, shader_int8 = false, shader_int16 = false, shader_int64 = false;
  bool storage_buffer_16bit = false, storage_buffer_8bit = false;
  bool integer_dot_product = false;              // VK_KHR_shader_integer_dot_product
  bool integer_dot_4x8_packed_accelerated = false;  // dotPacked4x8EXT is hardware, not emulated
  bool integer_dot_4x8_packed_unsigned_accelerated = false;  // the same for unsigned lanes
  bool integer_dot_product_enabled = false;  // the feature was enabled at device creation (Context only)
  bool cooperative_matrix = false;               // VK_KHR_cooperative_matrix
  bool push_descriptor = false;
  std::array<uint32_t, 3> max_workgroup_size{}, max_workgroup_count{};
  uint32_t max_workgroup_invocations = 0, max_shared_memory = 0, max_push_constants = 0;
  uint32_t max_storage_buffers_per_stage = 0;  // maxPerStageDescriptorStorageBuffers
  uint64_t max_allocation = 0, max_storage_buffer_range = 0, min_storage_offset_alignment = 0;
  uint64_t device_local_bytes = 0;
  bool timestamps = false;
  float timestamp_period_ns = 0;
  bool portability_subset = false;  // VK_KHR_portability_subset listed (MoltenVK): enabled
  // The device profile the limits above were clamped to ("" when none, see
  // apply_device_profile); error messages about a limit name it.
  std::string profile;
  bool is_cpu() const { return type == "cpu"; }
  // " (VKQAT_DEVICE_PROFILE=mobile)" or "", for messages about a limit.
  std::string profile_note() const;
};

// VKQAT_DEVICE_PROFILE=mobile|vulkan-min makes the backend act as if the device had only
// that profile's limits and features (each limit becomes min(device, profile), each
// feature device && profile):
//   mobile: 128 invocations per workgroup, 16 KiB shared memory, maxStorageBufferRange
//     2^27, 12 storage buffers per stage, no subgroup size control, no 64-, 16- or 8-bit
//     types (Android's baseline profile);
//   vulkan-min: the Vulkan 1.1 minimums (4 storage buffers per stage, no subgroup shuffle
//     or arithmetic, no integer dot product, 256-byte storage offset alignment).
// "" or "none" leaves the device as it is; anything else throws Error naming the variable.
void apply_device_profile(DeviceInfo& info, const std::string& profile);
// The profile VKQAT_DEVICE_PROFILE names ("" when unset); throws Error when unknown.
std::string device_profile_from_env();

// Lists every Vulkan physical device. Throws Error with advice when there is no driver.
std::vector<DeviceInfo> enumerate_devices();

// Picks discrete > integrated > virtual > cpu, unless `requested` >= 0 or the VKQAT_DEVICE
// environment variable names an index. Throws Error naming the flag when out of range.
int select_device(const std::vector<DeviceInfo>& devices, int requested);

struct ContextOptions {
  int device = -1;          // -1: automatic (or VKQAT_DEVICE)
  bool validation = false;  // VK_LAYER_KHRONOS_validation + synchronization validation
  bool pipeline_cache = true;  // persisted under $XDG_CACHE_HOME/vkqat
  // Called for every validation message (warning or error). Default: print to stderr.
  std::function<void(const std::string&)> on_validation_message;
  // For a window on the same device (the visualizer): a queue family that also does
  // graphics, and extra instance / device extensions (surface, swapchain). Throws Error
  // naming the device when it has no such family or extension.
  bool graphics = false;
  std::vector<std::string> instance_extensions, device_extensions;
};

class Context {
 public:
  explicit Context(const ContextOptions& options = {});
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  const DeviceInfo& info() const { return info_; }
  VkDevice device() const { return device_; }
  VkPhysicalDevice physical_device() const { return physical_; }
  VkQueue queue() const { return queue_; }
  uint32_t queue_family() const { return queue_family_; }
  VkInstance instance() const { return instance_; }

  // Device memory (sub-allocated from large blocks). Device: fastest for the GPU (may be
  // host visible on UMA/CPU drivers, then mapped() is non-null). Host: always mapped.
  Buffer alloc(uint64_t bytes, MemoryKind kind = MemoryKind::Device);
  BlockAllocator& allocator() { return *allocator_; }

  // Synchronous transfers through the persistent staging ring (or memcpy when mapped).
  // Must not be called while a Recording is running.
  void upload(const BufferView& dst, const void* src, uint64_t bytes);
  void download(const BufferView& src, void* dst, uint64_t bytes);

  // Compiled kernels, cached by (shader, local size, specialization constants).
  // Spec-constant ids 0,1,2 are the local size x,y,z; `spec` gives ids 3, 4, ... in order.
  // subgroup_size != 0: the pipeline requests exactly that subgroup size with full
  // subgroups (throws Error when the device lacks subgroup size control, see
  // DeviceInfo::subgroup_size_control). Also throws when the kernel binds more storage
  // buffers than maxPerStageDescriptorStorageBuffers.
  const Kernel& kernel(const std::string& shader, std::array<uint32_t, 3> local_size = {64, 1, 1},
                       const std::vector<uint32_t>& spec = {}, uint32_t subgroup_size = 0);

  // Runs one command buffer and waits (the staging path).
  void submit_and_wait(VkCommandBuffer cmd);
  // Submits one command buffer that signals `fence` when done, without waiting (Recording::submit).
  void submit(VkCommandBuffer cmd, VkFence fence);
  VkCommandPool command_pool() const { return command_pool_; }

  // Held around every vkQueueSubmit of submit_and_wait: another thread that submits to or
  // presents on queue() (a UI thread) must hold it too (Vulkan queues need external sync).
  std::mutex& queue_mutex() { return queue_mutex_; }

  uint64_t validation_message_count() const { return validation_messages_; }
  void report_validation_message(const std::string& msg);

 private:
  void release();
  ContextOptions options_;
  DeviceInfo info_;
  VkInstance instance_ = VK_NULL_HANDLE;
  VkDebugUtilsMessengerEXT messenger_ = VK_NULL_HANDLE;
  VkPhysicalDevice physical_ = VK_NULL_HANDLE;
  VkDevice device_ = VK_NULL_HANDLE;
  VkQueue queue_ = VK_NULL_HANDLE;
  uint32_t queue_family_ = 0;
  VkCommandPool command_pool_ = VK_NULL_HANDLE;
  VkFence fence_ = VK_NULL_HANDLE;
  std::unique_ptr<BlockAllocator> allocator_;
  std::unique_ptr<StagingRing> staging_;
  std::unique_ptr<KernelCache> kernels_;
  uint64_t validation_messages_ = 0;
  std::mutex queue_mutex_;
};

}  // namespace vkqat

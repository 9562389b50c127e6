#pragma once
// Device memory: a block sub-allocator (one vkAllocateMemory per 64 MiB block, never one
// per tensor) and a persistent staging ring for transfers to non-mappable memory.
#include <vulkan/vulkan.h>

#include <cstdint>
#include <memory>
#include <vector>

namespace vkqat {

class BlockAllocator;

enum class MemoryKind { Device, Host };

// A non-owning range of a VkBuffer, what a dispatch binds.
struct BufferView {
  VkBuffer buffer = VK_NULL_HANDLE;
  uint64_t offset = 0, size = 0;
  void* mapped = nullptr;  // host pointer to `offset`, or null
  bool valid() const { return buffer != VK_NULL_HANDLE; }
  // A sub-range [byte_offset, byte_offset + bytes). byte_offset must respect the device's
  // minStorageBufferOffsetAlignment when bound (the recorder checks).
  BufferView sub(uint64_t byte_offset, uint64_t bytes) const;
};

// An owning sub-allocation; move-only, returns its range to the allocator on destruction.
class Buffer {
 public:
  Buffer() = default;
  ~Buffer();
  Buffer(Buffer&& o) noexcept;
  Buffer& operator=(Buffer&& o) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  // A non-owning Buffer over `v` (nothing is released on destruction): the owner of the
  // memory must outlive it.
  static Buffer borrowed(BufferView v);

  BufferView view() const { return view_; }
  uint64_t size() const { return view_.size; }
  void* mapped() const { return view_.mapped; }
  bool valid() const { return view_.valid(); }

 private:
  friend class BlockAllocator;
  BlockAllocator* owner_ = nullptr;
  uint32_t block_ = 0;
  uint64_t reserved_ = 0;  // bytes reserved in the block (aligned size)
  BufferView view_;
};

struct MemoryStats {
  uint64_t blocks = 0, block_bytes = 0, used_bytes = 0, peak_used_bytes = 0, live_buffers = 0;
};

class BlockAllocator {
 public:
  BlockAllocator(VkDevice device, VkPhysicalDevice physical, uint64_t alignment,
                 uint64_t max_allocation, uint64_t block_bytes = 64ull << 20);
  ~BlockAllocator();
  Buffer alloc(uint64_t bytes, MemoryKind kind);
  MemoryStats stats() const { return stats_; }
  uint64_t alignment() const { return alignment_; }

 private:
  friend class Buffer;
  struct Range { uint64_t offset, size; };
  struct Block {
    VkDeviceMemory memory = VK_NULL_HANDLE;
    VkBuffer buffer = VK_NULL_HANDLE;
    uint64_t size = 0;
    MemoryKind kind = MemoryKind::Device;
    uint8_t* mapped = nullptr;
    std::vector<Range> free;  // sorted by offset, coalesced
  };
  void release(uint32_t block, uint64_t offset, uint64_t size);
  uint32_t new_block(uint64_t min_bytes, MemoryKind kind);
  uint32_t memory_type(MemoryKind kind, uint32_t type_bits) const;

  VkDevice device_;
  VkPhysicalDevice physical_;
  uint64_t alignment_, max_allocation_, block_bytes_;
  std::vector<Block> blocks_;
  MemoryStats stats_;
};

// Host-visible ring used to move data to/from memory the host cannot map.
class StagingRing {
 public:
  StagingRing(BlockAllocator& alloc, uint64_t bytes) : buffer_(alloc.alloc(bytes, MemoryKind::Host)) {}
  const Buffer& buffer() const { return buffer_; }
  uint64_t capacity() const { return buffer_.size(); }

 private:
  Buffer buffer_;
};

}  // namespace vkqat

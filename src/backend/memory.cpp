#include "backend/memory.h"

#include <algorithm>
#include <string>

#include "backend/error.h"

namespace vkqat {

BufferView BufferView::sub(uint64_t byte_offset, uint64_t bytes) const {
  if (byte_offset + bytes > size)
    throw Error("buffer sub-range [" + std::to_string(byte_offset) + ", " +
                std::to_string(byte_offset + bytes) + ") exceeds its " + std::to_string(size) + " bytes");
  BufferView v = *this;
  v.offset += byte_offset;
  v.size = bytes;
  if (mapped) v.mapped = static_cast<uint8_t*>(mapped) + byte_offset;
  return v;
}

Buffer::~Buffer() {
  if (owner_) owner_->release(block_, view_.offset, reserved_);
}

Buffer::Buffer(Buffer&& o) noexcept { *this = std::move(o); }

Buffer Buffer::borrowed(BufferView v) {
  Buffer b;
  b.view_ = v;
  return b;
}

Buffer& Buffer::operator=(Buffer&& o) noexcept {
  if (this != &o) {
    if (owner_) owner_->release(block_, view_.offset, reserved_);
    owner_ = o.owner_;
    block_ = o.block_;
    reserved_ = o.reserved_;
    view_ = o.view_;
    o.owner_ = nullptr;
    o.view_ = {};
  }
  return *this;
}

BlockAllocator::BlockAllocator(VkDevice device, VkPhysicalDevice physical, uint64_t alignment,
                               uint64_t max_allocation, uint64_t block_bytes)
    : device_(device), physical_(physical), alignment_(std::max<uint64_t>(alignment, 256)),
      max_allocation_(max_allocation), block_bytes_(std::min(block_bytes, max_allocation)) {}

BlockAllocator::~BlockAllocator() {
  for (Block& b : blocks_) {
    if (b.buffer) vkDestroyBuffer(device_, b.buffer, nullptr);
    if (b.memory) vkFreeMemory(device_, b.memory, nullptr);
  }
}

uint32_t BlockAllocator::memory_type(MemoryKind kind, uint32_t type_bits) const {
  VkPhysicalDeviceMemoryProperties props;
  vkGetPhysicalDeviceMemoryProperties(physical_, &props);
  // Preference lists: the first flag set any allowed type satisfies wins.
  std::vector<VkMemoryPropertyFlags> wanted;
  if (kind == MemoryKind::Device) {
    wanted = {VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT, 0};
  } else {
    wanted = {VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT |
                  VK_MEMORY_PROPERTY_HOST_CACHED_BIT,
              VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT};
  }
  for (VkMemoryPropertyFlags flags : wanted)
    for (uint32_t i = 0; i < props.memoryTypeCount; ++i)
      if ((type_bits & (1u << i)) && (props.memoryTypes[i].propertyFlags & flags) == flags) return i;
  throw Error(std::string("no Vulkan memory type for ") + (kind == MemoryKind::Device ? "device" : "host") +
              " buffers");
}

uint32_t BlockAllocator::new_block(uint64_t min_bytes, MemoryKind kind) {
  uint64_t size = std::max(block_bytes_, (min_bytes + alignment_ - 1) / alignment_ * alignment_);
  if (size > max_allocation_)
    throw Error("allocation of " + std::to_string(min_bytes) + " bytes exceeds the device's maximum of " +
                std::to_string(max_allocation_) + " bytes per allocation");
  Block b;
  b.size = size;
  b.kind = kind;
  VkBufferCreateInfo bci{VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO};
  bci.size = size;
  bci.usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
              VK_BUFFER_USAGE_TRANSFER_DST_BIT;
  bci.sharingMode = VK_SHARING_MODE_EXCLUSIVE;
  vk_check(vkCreateBuffer(device_, &bci, nullptr, &b.buffer), "vkCreateBuffer");
  VkMemoryRequirements req;
  vkGetBufferMemoryRequirements(device_, b.buffer, &req);
  VkMemoryAllocateInfo mai{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO};
  mai.allocationSize = req.size;
  mai.memoryTypeIndex = memory_type(kind, req.memoryTypeBits);
  VkResult r = vkAllocateMemory(device_, &mai, nullptr, &b.memory);
  if (r != VK_SUCCESS) {
    vkDestroyBuffer(device_, b.buffer, nullptr);
    throw Error("out of GPU memory: could not allocate a block of " + std::to_string(size >> 20) +
                " MiB (" + vk_result_name(r) + "); " + std::to_string(stats_.used_bytes >> 20) +
                " MiB in use");
  }
  vk_check(vkBindBufferMemory(device_, b.buffer, b.memory, 0), "vkBindBufferMemory");
  VkPhysicalDeviceMemoryProperties props;
  vkGetPhysicalDeviceMemoryProperties(physical_, &props);
  // Map memory the host can see coherently (all memory on UMA/CPU drivers): uploads and
  // readbacks are then plain memcpy with no flush/invalidate.
  const VkMemoryPropertyFlags coherent = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
  if ((props.memoryTypes[mai.memoryTypeIndex].propertyFlags & coherent) == coherent) {
    void* p = nullptr;
    vk_check(vkMapMemory(device_, b.memory, 0, VK_WHOLE_SIZE, 0, &p), "vkMapMemory");
    b.mapped = static_cast<uint8_t*>(p);
  }
  b.free.push_back({0, size});
  blocks_.push_back(std::move(b));
  stats_.blocks++;
  stats_.block_bytes += size;
  return uint32_t(blocks_.size() - 1);
}

Buffer BlockAllocator::alloc(uint64_t bytes, MemoryKind kind) {
  if (bytes == 0) bytes = 4;
  uint64_t need = (bytes + alignment_ - 1) / alignment_ * alignment_;
  auto try_block = [&](uint32_t bi) -> Buffer {
    Block& b = blocks_[bi];
    for (size_t i = 0; i < b.free.size(); ++i) {
      Range& r = b.free[i];
      if (r.size < need) continue;  // first fit: blocks hold few, long-lived tensors
      Buffer out;
      out.owner_ = this;
      out.block_ = bi;
      out.reserved_ = need;
      out.view_.buffer = b.buffer;
      out.view_.offset = r.offset;
      out.view_.size = bytes;
      out.view_.mapped = b.mapped ? b.mapped + r.offset : nullptr;
      r.offset += need;
      r.size -= need;
      if (r.size == 0) b.free.erase(b.free.begin() + long(i));
      stats_.used_bytes += need;
      stats_.peak_used_bytes = std::max(stats_.peak_used_bytes, stats_.used_bytes);
      stats_.live_buffers++;
      return out;
    }
    return Buffer();
  };
  for (uint32_t bi = 0; bi < blocks_.size(); ++bi) {
    if (blocks_[bi].kind != kind) continue;
    Buffer b = try_block(bi);
    if (b.valid()) return b;
  }
  return try_block(new_block(need, kind));
}

void BlockAllocator::release(uint32_t bi, uint64_t offset, uint64_t size) {
  Block& b = blocks_.at(bi);
  auto it = std::lower_bound(b.free.begin(), b.free.end(), offset,
                             [](const Range& r, uint64_t off) { return r.offset < off; });
  it = b.free.insert(it, Range{offset, size});
  // Coalesce with the neighbours so freed space can serve larger requests again.
  if (it + 1 != b.free.end() && it->offset + it->size == (it + 1)->offset) {
    it->size += (it + 1)->size;
    b.free.erase(it + 1);
  }
  if (it != b.free.begin() && (it - 1)->offset + (it - 1)->size == it->offset) {
    (it - 1)->size += it->size;
    b.free.erase(it);
  }
  stats_.used_bytes -= size;
  stats_.live_buffers--;
  // A block made for one tensor larger than the block size (a network's buffer pool, planned
  // again when quantizers or aux taps change it) goes back to the device once empty: kept, it
  // would hold memory no later request of another size can use. Its index stays (empty).
  if (b.size > block_bytes_ && b.free.size() == 1 && b.free[0].size == b.size) {
    vkDestroyBuffer(device_, b.buffer, nullptr);
    vkFreeMemory(device_, b.memory, nullptr);
    stats_.blocks--;
    stats_.block_bytes -= b.size;
    b = Block{};
  }
}

}  // namespace vkqat

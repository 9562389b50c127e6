#pragma once
// Dear ImGui on the training Context's device: the Vulkan backend set up on its graphics
// queue (submissions hold ctx.queue_mutex(), since the training thread submits too), and an
// offscreen target for --headless that renders into a VkImage and reads the pixels back.
#include <vulkan/vulkan.h>

#include <cstdint>
#include <string>
#include <vector>

#include "backend/context.h"

struct ImDrawData;

namespace vkqat::viz {

// ImGui's Vulkan backend for `render_pass` (owns the descriptor pool the backend needs).
class ImGuiVulkan {
 public:
  ImGuiVulkan(Context& ctx, VkRenderPass render_pass, uint32_t image_count);
  ~ImGuiVulkan();
  // Uploads the font atlas with a one-off command buffer.
  void upload_fonts();

 private:
  Context& ctx_;
  VkDescriptorPool pool_ = VK_NULL_HANDLE;
};

// Submits `cmd` on the context's queue (holding its mutex) and waits on `fence`.
void submit_and_wait(Context& ctx, VkCommandBuffer cmd, VkFence fence);

class OffscreenTarget {
 public:
  OffscreenTarget(Context& ctx, uint32_t width, uint32_t height);
  ~OffscreenTarget();
  VkRenderPass render_pass() const { return render_pass_; }
  // Renders the draw data and returns the image as RGBA8, row by row from the top.
  std::vector<uint8_t> render(ImDrawData* draw_data);

 private:
  Context& ctx_;
  uint32_t width_, height_;
  VkImage image_ = VK_NULL_HANDLE;
  VkDeviceMemory image_memory_ = VK_NULL_HANDLE, readback_memory_ = VK_NULL_HANDLE;
  VkImageView view_ = VK_NULL_HANDLE;
  VkRenderPass render_pass_ = VK_NULL_HANDLE;
  VkFramebuffer framebuffer_ = VK_NULL_HANDLE;
  VkBuffer readback_ = VK_NULL_HANDLE;
  void* mapped_ = nullptr;
  VkCommandPool pool_ = VK_NULL_HANDLE;
  VkCommandBuffer cmd_ = VK_NULL_HANDLE;
  VkFence fence_ = VK_NULL_HANDLE;
};

// Writes RGBA8 pixels as a PNG (stb_image_write). Throws Error naming the file.
void write_png(const std::string& path, uint32_t width, uint32_t height, const std::vector<uint8_t>& rgba);

}  // namespace vkqat::viz

#include "render.h"

#include <imgui.h>
#include <backends/imgui_impl_vulkan.h>

#include <stb/stb_image_write.h>

#include <cstring>
#include <mutex>

#include "backend/error.h"

namespace vkqat::viz {
namespace {
void check_imgui_vk(VkResult r) { vk_check(r, "ImGui Vulkan backend"); }

uint32_t memory_type(VkPhysicalDevice pd, uint32_t bits, VkMemoryPropertyFlags want) {
  VkPhysicalDeviceMemoryProperties mp;
  vkGetPhysicalDeviceMemoryProperties(pd, &mp);
  for (uint32_t i = 0; i < mp.memoryTypeCount; ++i)
    if ((bits & (1u << i)) && (mp.memoryTypes[i].propertyFlags & want) == want) return i;
  throw Error("no Vulkan memory type for the visualizer's render target");
}

VkDeviceMemory allocate(Context& ctx, VkMemoryRequirements req, VkMemoryPropertyFlags want) {
  VkMemoryAllocateInfo ai{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO};
  ai.allocationSize = req.size;
  ai.memoryTypeIndex = memory_type(ctx.physical_device(), req.memoryTypeBits, want);
  VkDeviceMemory m;
  vk_check(vkAllocateMemory(ctx.device(), &ai, nullptr, &m), "vkAllocateMemory (render target)");
  return m;
}
}  // namespace

void submit_and_wait(Context& ctx, VkCommandBuffer cmd, VkFence fence) {
  VkSubmitInfo si{VK_STRUCTURE_TYPE_SUBMIT_INFO};
  si.commandBufferCount = 1;
  si.pCommandBuffers = &cmd;
  {
    std::lock_guard<std::mutex> lock(ctx.queue_mutex());
    vk_check(vkQueueSubmit(ctx.queue(), 1, &si, fence), "vkQueueSubmit (render)");
  }
  vk_check(vkWaitForFences(ctx.device(), 1, &fence, VK_TRUE, UINT64_MAX), "vkWaitForFences (render)");
  vkResetFences(ctx.device(), 1, &fence);
}

ImGuiVulkan::ImGuiVulkan(Context& ctx, VkRenderPass render_pass, uint32_t image_count) : ctx_(ctx) {
  VkDescriptorPoolSize size{VK_DESCRIPTOR_TYPE_COMBINED_IMAGE_SAMPLER, 16};
  VkDescriptorPoolCreateInfo pi{VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO};
  pi.flags = VK_DESCRIPTOR_POOL_CREATE_FREE_DESCRIPTOR_SET_BIT;
  pi.maxSets = 16;
  pi.poolSizeCount = 1;
  pi.pPoolSizes = &size;
  vk_check(vkCreateDescriptorPool(ctx.device(), &pi, nullptr, &pool_), "vkCreateDescriptorPool (ImGui)");
  ImGui_ImplVulkan_InitInfo info{};
  info.Instance = ctx.instance();
  info.PhysicalDevice = ctx.physical_device();
  info.Device = ctx.device();
  info.QueueFamily = ctx.queue_family();
  info.Queue = ctx.queue();
  info.DescriptorPool = pool_;
  info.MinImageCount = 2;
  info.ImageCount = std::max<uint32_t>(2, image_count);
  info.MSAASamples = VK_SAMPLE_COUNT_1_BIT;
  info.CheckVkResultFn = check_imgui_vk;
  // Dear ImGui 1.90.4 moved the render pass into the init info (Debian 12 has 1.86).
#if IMGUI_VERSION_NUM >= 19040
  info.RenderPass = render_pass;
  if (!ImGui_ImplVulkan_Init(&info)) throw Error("ImGui's Vulkan backend failed to initialise");
#else
  if (!ImGui_ImplVulkan_Init(&info, render_pass)) throw Error("ImGui's Vulkan backend failed to initialise");
#endif
}

ImGuiVulkan::~ImGuiVulkan() {
  ImGui_ImplVulkan_Shutdown();
  vkDestroyDescriptorPool(ctx_.device(), pool_, nullptr);
}

void ImGuiVulkan::upload_fonts() {
#if IMGUI_VERSION_NUM >= 19200
  // 1.92: the backend uploads font textures itself from NewFrame (RendererHasTextures).
#elif IMGUI_VERSION_NUM >= 19000
  // 1.90: the backend records and submits the upload on its own queue (info.Queue) and
  // frees the staging objects itself (DestroyFontUploadObjects is gone).
  std::lock_guard<std::mutex> lock(ctx_.queue_mutex());  // it submits to the shared queue
  if (!ImGui_ImplVulkan_CreateFontsTexture()) throw Error("ImGui's Vulkan backend failed to upload the fonts");
#else
  VkCommandPoolCreateInfo ci{VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO};
  ci.queueFamilyIndex = ctx_.queue_family();
  VkCommandPool pool;
  vk_check(vkCreateCommandPool(ctx_.device(), &ci, nullptr, &pool), "vkCreateCommandPool (fonts)");
  VkCommandBufferAllocateInfo ai{VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
  ai.commandPool = pool;
  ai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
  ai.commandBufferCount = 1;
  VkCommandBuffer cmd;
  vk_check(vkAllocateCommandBuffers(ctx_.device(), &ai, &cmd), "vkAllocateCommandBuffers (fonts)");
  VkFenceCreateInfo fi{VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
  VkFence fence;
  vk_check(vkCreateFence(ctx_.device(), &fi, nullptr, &fence), "vkCreateFence (fonts)");
  VkCommandBufferBeginInfo bi{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
  bi.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
  vkBeginCommandBuffer(cmd, &bi);
  ImGui_ImplVulkan_CreateFontsTexture(cmd);
  vkEndCommandBuffer(cmd);
  submit_and_wait(ctx_, cmd, fence);
  ImGui_ImplVulkan_DestroyFontUploadObjects();
  vkDestroyFence(ctx_.device(), fence, nullptr);
  vkDestroyCommandPool(ctx_.device(), pool, nullptr);
#endif
}

OffscreenTarget::OffscreenTarget(Context& ctx, uint32_t width, uint32_t height)
    : ctx_(ctx), width_(width), height_(height) {
  VkDevice dev = ctx.device();
  const VkFormat format = VK_FORMAT_R8G8B8A8_UNORM;
  VkImageCreateInfo ii{VK_STRUCTURE_TYPE_IMAGE_CREATE_INFO};
  ii.imageType = VK_IMAGE_TYPE_2D;
  ii.format = format;
  ii.extent = {width, height, 1};
  ii.mipLevels = ii.arrayLayers = 1;
  ii.samples = VK_SAMPLE_COUNT_1_BIT;
  ii.tiling = VK_IMAGE_TILING_OPTIMAL;
  ii.usage = VK_IMAGE_USAGE_COLOR_ATTACHMENT_BIT | VK_IMAGE_USAGE_TRANSFER_SRC_BIT;
  vk_check(vkCreateImage(dev, &ii, nullptr, &image_), "vkCreateImage (offscreen)");
  VkMemoryRequirements req;
  vkGetImageMemoryRequirements(dev, image_, &req);
  image_memory_ = allocate(ctx, req, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT);
  vkBindImageMemory(dev, image_, image_memory_, 0);
  VkImageViewCreateInfo vi{VK_STRUCTURE_TYPE_IMAGE_VIEW_CREATE_INFO};
  vi.image = image_;
  vi.viewType = VK_IMAGE_VIEW_TYPE_2D;
  vi.format = format;
  vi.subresourceRange = {VK_IMAGE_ASPECT_COLOR_BIT, 0, 1, 0, 1};
  vk_check(vkCreateImageView(dev, &vi, nullptr, &view_), "vkCreateImageView (offscreen)");

  VkAttachmentDescription att{};
  att.format = format;
  att.samples = VK_SAMPLE_COUNT_1_BIT;
  att.loadOp = VK_ATTACHMENT_LOAD_OP_CLEAR;
  att.storeOp = VK_ATTACHMENT_STORE_OP_STORE;
  att.stencilLoadOp = VK_ATTACHMENT_LOAD_OP_DONT_CARE;
  att.stencilStoreOp = VK_ATTACHMENT_STORE_OP_DONT_CARE;
  att.initialLayout = VK_IMAGE_LAYOUT_UNDEFINED;
  att.finalLayout = VK_IMAGE_LAYOUT_TRANSFER_SRC_OPTIMAL;
  VkAttachmentReference ref{0, VK_IMAGE_LAYOUT_COLOR_ATTACHMENT_OPTIMAL};
  VkSubpassDescription sub{};
  sub.pipelineBindPoint = VK_PIPELINE_BIND_POINT_GRAPHICS;
  sub.colorAttachmentCount = 1;
  sub.pColorAttachments = &ref;
  VkSubpassDependency deps[2] = {};
  deps[0].srcSubpass = VK_SUBPASS_EXTERNAL;  // the previous frame's copy has read the image
  deps[0].dstSubpass = 0;
  deps[0].srcStageMask = VK_PIPELINE_STAGE_TRANSFER_BIT;
  deps[0].dstStageMask = VK_PIPELINE_STAGE_COLOR_ATTACHMENT_OUTPUT_BIT;
  deps[0].srcAccessMask = VK_ACCESS_TRANSFER_READ_BIT;
  deps[0].dstAccessMask = VK_ACCESS_COLOR_ATTACHMENT_WRITE_BIT;
  deps[1].srcSubpass = 0;  // the copy reads what the pass wrote
  deps[1].dstSubpass = VK_SUBPASS_EXTERNAL;
  deps[1].srcStageMask = VK_PIPELINE_STAGE_COLOR_ATTACHMENT_OUTPUT_BIT;
  deps[1].dstStageMask = VK_PIPELINE_STAGE_TRANSFER_BIT;
  deps[1].srcAccessMask = VK_ACCESS_COLOR_ATTACHMENT_WRITE_BIT;
  deps[1].dstAccessMask = VK_ACCESS_TRANSFER_READ_BIT;
  VkRenderPassCreateInfo rp{VK_STRUCTURE_TYPE_RENDER_PASS_CREATE_INFO};
  rp.attachmentCount = 1;
  rp.pAttachments = &att;
  rp.subpassCount = 1;
  rp.pSubpasses = &sub;
  rp.dependencyCount = 2;
  rp.pDependencies = deps;
  vk_check(vkCreateRenderPass(dev, &rp, nullptr, &render_pass_), "vkCreateRenderPass (offscreen)");
  VkFramebufferCreateInfo fb{VK_STRUCTURE_TYPE_FRAMEBUFFER_CREATE_INFO};
  fb.renderPass = render_pass_;
  fb.attachmentCount = 1;
  fb.pAttachments = &view_;
  fb.width = width, fb.height = height, fb.layers = 1;
  vk_check(vkCreateFramebuffer(dev, &fb, nullptr, &framebuffer_), "vkCreateFramebuffer (offscreen)");

  VkBufferCreateInfo bi{VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO};
  bi.size = VkDeviceSize(width) * height * 4;
  bi.usage = VK_BUFFER_USAGE_TRANSFER_DST_BIT;
  vk_check(vkCreateBuffer(dev, &bi, nullptr, &readback_), "vkCreateBuffer (readback)");
  vkGetBufferMemoryRequirements(dev, readback_, &req);
  readback_memory_ = allocate(ctx, req, VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT);
  vkBindBufferMemory(dev, readback_, readback_memory_, 0);
  vk_check(vkMapMemory(dev, readback_memory_, 0, VK_WHOLE_SIZE, 0, &mapped_), "vkMapMemory (readback)");

  VkCommandPoolCreateInfo ci{VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO};
  ci.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT;
  ci.queueFamilyIndex = ctx.queue_family();
  vk_check(vkCreateCommandPool(dev, &ci, nullptr, &pool_), "vkCreateCommandPool (offscreen)");
  VkCommandBufferAllocateInfo ai{VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
  ai.commandPool = pool_;
  ai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
  ai.commandBufferCount = 1;
  vk_check(vkAllocateCommandBuffers(dev, &ai, &cmd_), "vkAllocateCommandBuffers (offscreen)");
  VkFenceCreateInfo fi{VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
  vk_check(vkCreateFence(dev, &fi, nullptr, &fence_), "vkCreateFence (offscreen)");
}

OffscreenTarget::~OffscreenTarget() {
  VkDevice dev = ctx_.device();
  vkDestroyFence(dev, fence_, nullptr);
  vkDestroyCommandPool(dev, pool_, nullptr);
  vkDestroyBuffer(dev, readback_, nullptr);
  vkFreeMemory(dev, readback_memory_, nullptr);
  vkDestroyFramebuffer(dev, framebuffer_, nullptr);
  vkDestroyRenderPass(dev, render_pass_, nullptr);
  vkDestroyImageView(dev, view_, nullptr);
  vkDestroyImage(dev, image_, nullptr);
  vkFreeMemory(dev, image_memory_, nullptr);
}

std::vector<uint8_t> OffscreenTarget::render(ImDrawData* draw_data) {
  vkResetCommandBuffer(cmd_, 0);
  VkCommandBufferBeginInfo bi{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
  bi.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
  vkBeginCommandBuffer(cmd_, &bi);
  VkClearValue clear{};
  clear.color = {{0.06f, 0.06f, 0.07f, 1.f}};
  VkRenderPassBeginInfo rb{VK_STRUCTURE_TYPE_RENDER_PASS_BEGIN_INFO};
  rb.renderPass = render_pass_;
  rb.framebuffer = framebuffer_;
  rb.renderArea.extent = {width_, height_};
  rb.clearValueCount = 1;
  rb.pClearValues = &clear;
  vkCmdBeginRenderPass(cmd_, &rb, VK_SUBPASS_CONTENTS_INLINE);
  ImGui_ImplVulkan_RenderDrawData(draw_data, cmd_);
  vkCmdEndRenderPass(cmd_);
  VkBufferImageCopy region{};
  region.imageSubresource = {VK_IMAGE_ASPECT_COLOR_BIT, 0, 0, 1};
  region.imageExtent = {width_, height_, 1};
  vkCmdCopyImageToBuffer(cmd_, image_, VK_IMAGE_LAYOUT_TRANSFER_SRC_OPTIMAL, readback_, 1, &region);
  VkBufferMemoryBarrier mb{VK_STRUCTURE_TYPE_BUFFER_MEMORY_BARRIER};
  mb.srcAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT;
  mb.dstAccessMask = VK_ACCESS_HOST_READ_BIT;
  mb.srcQueueFamilyIndex = mb.dstQueueFamilyIndex = VK_QUEUE_FAMILY_IGNORED;
  mb.buffer = readback_;
  mb.size = VK_WHOLE_SIZE;
  vkCmdPipelineBarrier(cmd_, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_PIPELINE_STAGE_HOST_BIT, 0, 0, nullptr, 1, &mb, 0, nullptr);
  vkEndCommandBuffer(cmd_);
  submit_and_wait(ctx_, cmd_, fence_);
  std::vector<uint8_t> pixels(size_t(width_) * height_ * 4);
  std::memcpy(pixels.data(), mapped_, pixels.size());
  return pixels;
}

void write_png(const std::string& path, uint32_t width, uint32_t height, const std::vector<uint8_t>& rgba) {
  if (!stbi_write_png(path.c_str(), int(width), int(height), 4, rgba.data(), int(width * 4)))
    throw Error("--screenshot " + path + ": cannot write the PNG");
}

}  // namespace vkqat::viz

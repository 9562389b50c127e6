#include "window.h"

#define GLFW_INCLUDE_VULKAN
#include <GLFW/glfw3.h>
#include <imgui.h>
#include <backends/imgui_impl_glfw.h>
#include <backends/imgui_impl_vulkan.h>

#include <chrono>
#include <cstdio>
#include <mutex>

#include "backend/error.h"
#include "panels.h"
#include "render.h"

namespace vkqat::viz {
namespace {

void glfw_error(int code, const char* what) { std::fprintf(stderr, "vkqat-viz: GLFW error %d: %s\n", code, what); }

// One frame into the swapchain (after ImGui's example_glfw_vulkan). false: out of date.
bool render_frame(Context& ctx, ImGui_ImplVulkanH_Window& wd, ImDrawData* draw_data) {
  VkDevice dev = ctx.device();
  VkSemaphore acquired = wd.FrameSemaphores[wd.SemaphoreIndex].ImageAcquiredSemaphore;
  VkSemaphore complete = wd.FrameSemaphores[wd.SemaphoreIndex].RenderCompleteSemaphore;
  VkResult r = vkAcquireNextImageKHR(dev, wd.Swapchain, UINT64_MAX, acquired, VK_NULL_HANDLE, &wd.FrameIndex);
  if (r == VK_ERROR_OUT_OF_DATE_KHR || r == VK_SUBOPTIMAL_KHR) return false;
  vk_check(r, "vkAcquireNextImageKHR");
  ImGui_ImplVulkanH_Frame& fd = wd.Frames[wd.FrameIndex];
  vk_check(vkWaitForFences(dev, 1, &fd.Fence, VK_TRUE, UINT64_MAX), "vkWaitForFences (frame)");
  vkResetFences(dev, 1, &fd.Fence);
  vkResetCommandPool(dev, fd.CommandPool, 0);
  VkCommandBufferBeginInfo bi{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
  bi.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
  vkBeginCommandBuffer(fd.CommandBuffer, &bi);
  VkRenderPassBeginInfo rb{VK_STRUCTURE_TYPE_RENDER_PASS_BEGIN_INFO};
  rb.renderPass = wd.RenderPass;
  rb.framebuffer = fd.Framebuffer;
  rb.renderArea.extent = {uint32_t(wd.Width), uint32_t(wd.Height)};
  rb.clearValueCount = 1;
  rb.pClearValues = &wd.ClearValue;
  vkCmdBeginRenderPass(fd.CommandBuffer, &rb, VK_SUBPASS_CONTENTS_INLINE);
  ImGui_ImplVulkan_RenderDrawData(draw_data, fd.CommandBuffer);
  vkCmdEndRenderPass(fd.CommandBuffer);
  vkEndCommandBuffer(fd.CommandBuffer);
  VkPipelineStageFlags wait_stage = VK_PIPELINE_STAGE_COLOR_ATTACHMENT_OUTPUT_BIT;
  VkSubmitInfo si{VK_STRUCTURE_TYPE_SUBMIT_INFO};
  si.waitSemaphoreCount = 1;
  si.pWaitSemaphores = &acquired;
  si.pWaitDstStageMask = &wait_stage;
  si.commandBufferCount = 1;
  si.pCommandBuffers = &fd.CommandBuffer;
  si.signalSemaphoreCount = 1;
  si.pSignalSemaphores = &complete;
  VkPresentInfoKHR pi{VK_STRUCTURE_TYPE_PRESENT_INFO_KHR};
  pi.waitSemaphoreCount = 1;
  pi.pWaitSemaphores = &complete;
  pi.swapchainCount = 1;
  pi.pSwapchains = &wd.Swapchain;
  pi.pImageIndices = &wd.FrameIndex;
  {
    std::lock_guard<std::mutex> lock(ctx.queue_mutex());  // the training thread submits too
    vk_check(vkQueueSubmit(ctx.queue(), 1, &si, fd.Fence), "vkQueueSubmit (frame)");
    r = vkQueuePresentKHR(ctx.queue(), &pi);
  }
  wd.SemaphoreIndex = (wd.SemaphoreIndex + 1) % wd.ImageCount;
  if (r == VK_ERROR_OUT_OF_DATE_KHR || r == VK_SUBOPTIMAL_KHR) return false;
  vk_check(r, "vkQueuePresentKHR");
  return true;
}

}  // namespace

std::vector<std::string> window_instance_extensions() {
  glfwSetErrorCallback(glfw_error);
  if (!glfwInit()) throw Error("cannot open a window (no X display?); use --headless --screenshot OUT.png");
  if (!glfwVulkanSupported()) throw Error("GLFW finds no Vulkan loader for windows; use --headless");
  uint32_t n = 0;
  const char** names = glfwGetRequiredInstanceExtensions(&n);
  if (!names) throw Error("Vulkan cannot present to windows here; use --headless");
  return std::vector<std::string>(names, names + n);
}

int run_window(Context& ctx, Session& session, int width, int height, double quit_after_s) {
  glfwWindowHint(GLFW_CLIENT_API, GLFW_NO_API);
  GLFWwindow* window = glfwCreateWindow(width, height, "vkqat-viz", nullptr, nullptr);
  if (!window) throw Error("cannot create a window; use --headless");
  VkSurfaceKHR surface = VK_NULL_HANDLE;
  vk_check(glfwCreateWindowSurface(ctx.instance(), window, nullptr, &surface), "glfwCreateWindowSurface");
  VkBool32 can_present = VK_FALSE;
  vkGetPhysicalDeviceSurfaceSupportKHR(ctx.physical_device(), ctx.queue_family(), surface, &can_present);
  if (!can_present) throw Error("Vulkan device " + ctx.info().name + " cannot present to this window; use --headless");

  ImGui_ImplVulkanH_Window wd;
  wd.Surface = surface;
  const VkFormat formats[] = {VK_FORMAT_B8G8R8A8_UNORM, VK_FORMAT_R8G8B8A8_UNORM};
  wd.SurfaceFormat = ImGui_ImplVulkanH_SelectSurfaceFormat(ctx.physical_device(), surface, formats, 2,
                                                           VK_COLORSPACE_SRGB_NONLINEAR_KHR);
  const VkPresentModeKHR modes[] = {VK_PRESENT_MODE_FIFO_KHR};
  wd.PresentMode = ImGui_ImplVulkanH_SelectPresentMode(ctx.physical_device(), surface, modes, 1);
  wd.ClearValue.color = {{0.06f, 0.06f, 0.07f, 1.f}};
  auto resize = [&](int w, int h) {
    std::lock_guard<std::mutex> lock(ctx.queue_mutex());  // it waits for the device to idle
    ImGui_ImplVulkanH_CreateOrResizeWindow(ctx.instance(), ctx.physical_device(), ctx.device(), &wd, ctx.queue_family(),
                                           nullptr, w, h, 2);
  };
  int fw, fh;
  glfwGetFramebufferSize(window, &fw, &fh);
  resize(fw, fh);

  ImGui::CreateContext();
  ImGui::StyleColorsDark();
  ImGui_ImplGlfw_InitForVulkan(window, true);
  int frames = 0;
  {
    ImGuiVulkan backend(ctx, wd.RenderPass, wd.ImageCount);
    backend.upload_fonts();
    UiState ui;
    const auto start = std::chrono::steady_clock::now();
    bool rebuild = false;
    while (!glfwWindowShouldClose(window)) {
      glfwWaitEventsTimeout(0.1);  // ~10 frames/s unless the user acts: the CPU is for training
      if (quit_after_s > 0 && std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() > quit_after_s) break;
      glfwGetFramebufferSize(window, &fw, &fh);
      if (fw == 0 || fh == 0) continue;  // minimised
      if (rebuild || fw != wd.Width || fh != wd.Height) {
        ImGui_ImplVulkan_SetMinImageCount(2);
        resize(fw, fh);
        wd.FrameIndex = 0;
        rebuild = false;
      }
      ImGui_ImplVulkan_NewFrame();
      ImGui_ImplGlfw_NewFrame();
      ImGui::NewFrame();
      const View view = session.view();
      draw_panels(view, view.live ? &session : nullptr, ui, float(wd.Width), float(wd.Height));
      ImGui::Render();
      rebuild = !render_frame(ctx, wd, ImGui::GetDrawData());
      ++frames;
    }
    session.join();
    std::lock_guard<std::mutex> lock(ctx.queue_mutex());
    vkDeviceWaitIdle(ctx.device());
  }
  ImGui_ImplGlfw_Shutdown();
  ImGui::DestroyContext();
  ImGui_ImplVulkanH_DestroyWindow(ctx.instance(), ctx.device(), &wd, nullptr);
  glfwDestroyWindow(window);
  glfwTerminate();
  return frames;
}

}  // namespace vkqat::viz

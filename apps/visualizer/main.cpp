// vkqat-viz: watch (and steer) quantization-aware training live, or replay a finished run.
//   vkqat-viz [vkqat train options]              window; training on a worker thread
//   vkqat-viz --replay RUN_DIR                   the statistics a run wrote (--stats-every)
//   ... --headless --frames N --screenshot F.png offscreen, no window or X server: renders
//                                                one frame per training step, N frames
// Training runs on the window's physical device (a logical device and queue of its own);
// the UI reads only the small statistics.
#include <CLI/CLI.hpp>
#include <imgui.h>
#include <backends/imgui_impl_vulkan.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>

#include "train_options.h"
#include "backend/error.h"
#include "panels.h"
#include "render.h"
#include "session.h"
#include "window.h"

namespace vkqat::viz {
namespace {

struct VizArgs {
  cli::TrainArgs train;
  std::string replay, screenshot, gpu_times, size = "1600x1000";
  bool headless = false;
  int frames = 0;
  double quit_after = 0;
  uint32_t width = 1600, height = 1000;
};

// The device with a graphics queue (and, for a window, the extensions to present).
std::unique_ptr<Context> open_device(const VizArgs& a) {
  ContextOptions co;
  co.device = a.train.device;
  co.graphics = true;
  if (!a.headless) {
    co.instance_extensions = window_instance_extensions();
    co.device_extensions = {VK_KHR_SWAPCHAIN_EXTENSION_NAME};
  }
  try {
    return std::make_unique<Context>(co);
  } catch (const Error& e) {
    throw Error(std::string("no Vulkan device can render the visualizer: ") + e.what());
  }
}

// Training gets a logical device of its own on the window's physical device, with a
// compute queue that never records graphics work. Sharing the window's queue made the GPU
// time panel blame the wrong kernels on lavapipe: once the UI had bound a framebuffer on
// that queue, llvmpipe bins each timestamp into the next raster scene, so a timestamp is
// written only after the following command runs and every dispatch's time lands on its
// neighbour. The UI reads nothing but host-side results, so nothing needs the shared queue.
std::unique_ptr<Context> open_training_device(const Context& window_ctx) {
  ContextOptions co;
  co.device = window_ctx.info().index;
  return std::make_unique<Context>(co);
}

std::unique_ptr<Session> open_session(Context* train_ctx, VizArgs& a) {
  if (!a.replay.empty()) return Session::replay(a.replay);
  cli::finish_train_args(a.train);
  a.train.cfg.profile = true;  // per-dispatch GPU times for the GPU-time panel
  std::unique_ptr<nn::Trainer> trainer = cli::make_trainer(*train_ctx, a.train);
  const nn::TrainConfig& c = trainer->config();
  char title[256];
  std::snprintf(title, sizeof title, "%s width %d on %s, device %s -> %s", c.model.name.c_str(), c.model.width, c.data.c_str(),
                train_ctx->info().name.c_str(), c.out.c_str());
  const int every = a.train.stats_every > 0 ? a.train.stats_every : 50;
  auto s = std::make_unique<Session>(std::move(trainer), every, title);
  s->start();
  return s;
}

// Returns the number of frames rendered.
int run_headless(Context& ctx, Session& session, const VizArgs& a) {
  int frames = 0;
  OffscreenTarget target(ctx, a.width, a.height);
  ImGui::CreateContext();
  ImGui::StyleColorsDark();
  ImGuiIO& io = ImGui::GetIO();
  io.DisplaySize = ImVec2(float(a.width), float(a.height));
  io.IniFilename = nullptr;
  std::vector<uint8_t> pixels;
  {
    ImGuiVulkan backend(ctx, target.render_pass(), 2);
    backend.upload_fonts();
    UiState ui;
    auto frame = [&] {
      io.DeltaTime = 1.f / 30;
      ImGui_ImplVulkan_NewFrame();
      ImGui::NewFrame();
      const View view = session.view();
      draw_panels(view, view.live ? &session : nullptr, ui, float(a.width), float(a.height));
      ImGui::Render();
      return target.render(ImGui::GetDrawData());
    };
    int64_t step = session.steps_done();
    while (a.frames <= 0 || frames < a.frames) {  // one frame per training step; 0: to the end
      step = session.wait_for_step_after(step);
      frame(), ++frames;
      if (session.view().finished) break;
    }
    session.join();
    frame();  // ImGui settles combo widths etc. over a frame
    pixels = frame();
    frames += 2;
  }
  ImGui::DestroyContext();
  if (!a.screenshot.empty()) write_png(a.screenshot, a.width, a.height, pixels);
  return frames;
}

// Throws Error naming `flag` unless `path` can be written. Its directory is created, as
// --out's is (the file may go inside the run directory); a file that did not exist is not left.
void check_writable(const char* flag, const std::string& path) {
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  std::error_code ec;
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  const bool existed = std::filesystem::exists(path);
  FILE* f = std::fopen(path.c_str(), "ab");
  if (!f) throw Error(std::string(flag) + " " + path + ": cannot write: " + std::strerror(errno));
  std::fclose(f);
  if (!existed) std::remove(path.c_str());
}

// The GPU-time panel's list as JSON, for scripts and for comparing with `vkqat train --profile`.
void write_gpu_times(const std::string& path, const View& v) {
  if (v.gpu.rows.empty())
    throw Error("--gpu-times " + path + ": no GPU times were measured (they come from step 3 of a live run on a "
                "device with timestamp queries)");
  std::ofstream out(path);
  out << v.gpu.to_json().dump(2) << "\n";
  out.close();
  if (!out) throw Error("--gpu-times " + path + ": cannot write the file");
  std::fprintf(stderr, "vkqat-viz: wrote %s (GPU times of step %lld)\n", path.c_str(), (long long)v.gpu.step);
}

int run(VizArgs& a) {
  std::smatch m;
  static const std::regex size_re(R"((\d+)x(\d+))");
  if (!std::regex_match(a.size, m, size_re)) throw Error("--size " + a.size + ": expected WIDTHxHEIGHT, e.g. 1600x1000");
  a.width = uint32_t(std::stoul(m[1])), a.height = uint32_t(std::stoul(m[2]));
  if (a.width < 300 || a.height < 200 || a.width > 8192 || a.height > 8192)
    throw Error("--size " + a.size + ": must be between 300x200 and 8192x8192");
  if (a.headless && a.screenshot.empty()) throw Error("--headless needs --screenshot OUT.png");
  if (!a.gpu_times.empty() && !a.replay.empty()) throw Error("--gpu-times needs a live run: replays have no GPU times");
  if (!a.headless && !a.screenshot.empty()) throw Error("--screenshot needs --headless");
  // Output files are checked now, not after minutes of training.
  if (!a.screenshot.empty()) check_writable("--screenshot", a.screenshot);
  if (!a.gpu_times.empty()) check_writable("--gpu-times", a.gpu_times);
  std::unique_ptr<Context> ctx = open_device(a);
  std::unique_ptr<Context> train_ctx = a.replay.empty() ? open_training_device(*ctx) : nullptr;
  std::unique_ptr<Session> session = open_session(train_ctx.get(), a);
  const int frames = a.headless ? run_headless(*ctx, *session, a)
                                : run_window(*ctx, *session, int(a.width), int(a.height), a.quit_after);
  const View v = session->view();
  if (v.live) {
    double ips = 0;
    for (const StepPoint& p : v.steps) ips += p.images_per_s / double(v.steps.size());
    std::fprintf(stderr, "vkqat-viz: trained %lld steps (mean %.0f images/s over steps), %zu statistics snapshots, %d frames\n",
                 (long long)v.step, ips, v.stats.size(), frames);
  }
  if (!a.screenshot.empty()) std::fprintf(stderr, "vkqat-viz: wrote %s (%ux%u)\n", a.screenshot.c_str(), a.width, a.height);
  if (!a.gpu_times.empty()) write_gpu_times(a.gpu_times, v);
  if (!v.error.empty() && v.status == "training failed") throw Error(v.error);
  return 0;
}

}  // namespace
}  // namespace vkqat::viz

int main(int argc, char** argv) {
  CLI::App app{"vkqat-viz: live view of quantization-aware training (takes every `vkqat train` option)"};
  vkqat::viz::VizArgs a;
  vkqat::cli::add_train_options(&app, a.train);
  app.add_option("--stats-every", a.train.stats_every, "statistics every N steps (default 50), also written to RUN_DIR/stats.cbor");
  app.add_option("--replay", a.replay, "view a finished run's RUN_DIR (trained with --stats-every N)");
  app.add_flag("--headless", a.headless, "render offscreen (no window, no X server); needs --screenshot");
  app.add_option("--frames", a.frames, "headless: frames to render, one per training step, before the screenshot (0: until training ends)");
  app.add_option("--screenshot", a.screenshot, "headless: write the last frame to this PNG");
  app.add_option("--gpu-times", a.gpu_times, "at exit, write the GPU-time panel's list (per kernel label) to this JSON file");
  app.add_option("--size", a.size, "window / screenshot size WIDTHxHEIGHT")->capture_default_str();
  app.add_option("--quit-after", a.quit_after, "window: close after this many seconds (scripted runs)");
  app.callback([&] { vkqat::cli::note_given(&app, a.train); });
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;  // usage errors exit 2, like vkqat's
  }
  try {
    return vkqat::viz::run(a);
  } catch (const vkqat::Error& e) {
    std::fprintf(stderr, "vkqat-viz: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vkqat-viz: internal error: %s\n", e.what());
    return 3;
  }
}

#pragma once
// The interactive mode: a GLFW window presenting on the training Context's device.
#include <string>
#include <vector>

#include "backend/context.h"
#include "session.h"

namespace vkqat::viz {

// Instance extensions a GLFW window needs; throws Error when there is no display.
std::vector<std::string> window_instance_extensions();

// Runs the UI until the window closes, the run ends and the user closes it, or
// `quit_after_s` (> 0) seconds pass. Returns the number of frames drawn.
int run_window(Context& ctx, Session& session, int width, int height, double quit_after_s);

}  // namespace vkqat::viz

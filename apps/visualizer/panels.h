#pragma once
// The visualizer's six panels, drawn with Dear ImGui from a View (no Vulkan here).
#include "session.h"

namespace vkqat::viz {

struct UiState {
  int layer = -1, act = -1;  // selected weight layer / activation (-1: a default)
  int snapshot = -1;         // statistics snapshot shown (-1: the latest)
  Settings edit;             // the controls' values, applied with "Apply"
  bool edit_valid = false;
};

// Draws every panel into a display of width x height; `session` receives the controls'
// commands (null: read-only, e.g. a replay).
void draw_panels(const View& view, Session* session, UiState& ui, float width, float height);

}  // namespace vkqat::viz

#pragma once
// Where the visualizer's panels sit (a 3 x 2 grid of the window) and the colours it plots
// data with. Shared with the screenshot checker (tests/viz_png_check.cpp), which finds each
// panel by this grid and tests that its data colours are actually on screen.
#include <array>
#include <cstdint>

namespace vkqat::viz {

enum Panel { kRun, kWeights, kActivations, kLastLayer, kCurves, kGpuTime, kPanelCount };
inline const char* panel_title(int p) {
  static const char* t[] = {"Run", "Weights (latent) and levels", "Activations before quantization",
                            "Last layer scale", "Loss and accuracy", "GPU time per dispatch"};
  return t[p];
}

struct Rect {
  float x, y, w, h;
};
inline Rect panel_rect(int p, float width, float height) {
  const float w = width / 3, h = height / 2;
  return {w * float(p % 3), h * float(p / 3), w, h};
}

struct Rgb {
  uint8_t r, g, b;
  uint32_t imgui() const { return 0xff000000u | uint32_t(b) << 16 | uint32_t(g) << 8 | r; }  // IM_COL32
};
// Saturated colours that ImGui's dark theme does not use.
constexpr Rgb kWeightBars{230, 160, 40}, kLevelLines{60, 230, 230}, kOccupancyBars{120, 210, 70};
constexpr Rgb kActBars{200, 110, 240}, kAlphaLine{255, 50, 50}, kAlphaHistory{250, 230, 60};
constexpr Rgb kPlainScale{255, 120, 50}, kSatScale{40, 200, 255}, kLogit{240, 240, 90}, kSaturation{200, 110, 240};
constexpr Rgb kLpCurve{255, 140, 40}, kAuxCurve{60, 200, 255}, kLpTest{255, 80, 160}, kAuxTest{120, 255, 160};
constexpr Rgb kGpuBars{100, 180, 255}, kLrCurve{160, 230, 120}, kSpeedCurve{240, 200, 90};

// The colours a populated panel shows (what the checker looks for).
inline std::array<Rgb, 2> panel_data_colours(int p) {
  switch (p) {
    case kRun: return {kLrCurve, kSpeedCurve};
    case kWeights: return {kWeightBars, kOccupancyBars};
    case kActivations: return {kActBars, kAlphaLine};
    case kLastLayer: return {kPlainScale, kSatScale};
    case kCurves: return {kLpCurve, kAuxCurve};
    default: return {kGpuBars, kGpuBars};
  }
}

}  // namespace vkqat::viz

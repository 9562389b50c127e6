// Checks a vkqat-viz screenshot: the PNG has the requested size and every panel named in the
// mask shows its data colours (apps/visualizer/layout.h) on enough pixels, i.e. the panels are
// populated by data, not just drawn. Usage: vkqat_viz_png_check FILE WIDTH HEIGHT [PANEL_MASK]
#include <stb/stb_image.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "../apps/visualizer/layout.h"

using namespace vkqat::viz;

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s FILE WIDTH HEIGHT [PANEL_MASK]\n", argv[0]);
    return 2;
  }
  const int want_w = std::atoi(argv[2]), want_h = std::atoi(argv[3]);
  const int mask = argc > 4 ? std::atoi(argv[4]) : (1 << kPanelCount) - 1;
  int w = 0, h = 0, channels = 0;
  unsigned char* px = stbi_load(argv[1], &w, &h, &channels, 3);
  if (!px) {
    std::fprintf(stderr, "FAIL: cannot read %s as an image: %s\n", argv[1], stbi_failure_reason());
    return 1;
  }
  bool ok = true;
  if (w != want_w || h != want_h) {
    std::fprintf(stderr, "FAIL: %s is %dx%d, expected %dx%d\n", argv[1], w, h, want_w, want_h);
    ok = false;
  }
  const int kMinPixels = 150;
  for (int p = 0; p < kPanelCount && w == want_w && h == want_h; ++p) {
    if (!(mask & (1 << p))) continue;
    const Rect r = panel_rect(p, float(w), float(h));
    for (const Rgb& c : panel_data_colours(p)) {
      int n = 0;
      for (int y = int(r.y); y < int(r.y + r.h); ++y)
        for (int x = int(r.x); x < int(r.x + r.w); ++x) {
          const unsigned char* q = px + 3 * (size_t(y) * w + x);
          n += std::abs(q[0] - c.r) + std::abs(q[1] - c.g) + std::abs(q[2] - c.b) <= 30;
        }
      const bool good = n >= kMinPixels;
      ok = ok && good;
      std::printf("%s panel '%s': %d pixels of colour (%d, %d, %d)\n", good ? "ok  " : "FAIL", panel_title(p), n, c.r, c.g,
                  c.b);
    }
  }
  stbi_image_free(px);
  std::printf(ok ? "screenshot populated\n" : "screenshot NOT populated\n");
  return ok ? 0 : 1;
}

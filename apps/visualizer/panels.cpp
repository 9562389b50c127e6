#include "panels.h"

#include <imgui.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "layout.h"

namespace vkqat::viz {
namespace {

struct Series {
  const char* name;
  Rgb colour;
  std::vector<ImVec2> points;  // (step, value); non-finite values are skipped
  bool markers = false;        // draw points as squares instead of a line
};

std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

// Line plot of several series over a shared x axis, with min / max labels and a legend.
void plot(const char* id, const std::vector<Series>& series, float height) {
  ImGui::PushID(id);
  const ImVec2 p0 = ImGui::GetCursorScreenPos();
  const ImVec2 size(ImGui::GetContentRegionAvail().x, height);
  ImGui::InvisibleButton("plot", size);
  ImDrawList* dl = ImGui::GetWindowDrawList();
  dl->AddRectFilled(p0, ImVec2(p0.x + size.x, p0.y + size.y), IM_COL32(20, 20, 24, 255));
  float x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
  for (const Series& s : series)
    for (const ImVec2& p : s.points)
      if (std::isfinite(p.y)) x0 = std::min(x0, p.x), x1 = std::max(x1, p.x), y0 = std::min(y0, p.y), y1 = std::max(y1, p.y);
  if (!(x0 <= x1)) {
    dl->AddText(ImVec2(p0.x + 6, p0.y + 6), IM_COL32(150, 150, 150, 255), "no data yet");
    ImGui::PopID();
    return;
  }
  if (x1 == x0) x1 = x0 + 1;
  if (y1 - y0 < 1e-6f * std::max(1.f, std::fabs(y1))) y0 -= 0.5f, y1 += 0.5f;
  const float pad = 4, ly = 14;
  auto to_screen = [&](ImVec2 p) {
    return ImVec2(p0.x + pad + (p.x - x0) / (x1 - x0) * (size.x - 2 * pad),
                  p0.y + ly + (1 - (p.y - y0) / (y1 - y0)) * (size.y - ly - pad));
  };
  float legend_x = p0.x + size.x;
  for (auto it = series.rbegin(); it != series.rend(); ++it) {
    const Series& s = *it;
    std::vector<ImVec2> pts;
    for (const ImVec2& p : s.points)
      if (std::isfinite(p.y)) pts.push_back(to_screen(p));
    if (pts.empty()) continue;
    if (s.markers || pts.size() == 1) {
      for (const ImVec2& q : pts) dl->AddRectFilled(ImVec2(q.x - 3, q.y - 3), ImVec2(q.x + 3, q.y + 3), s.colour.imgui());
    } else {
      dl->AddPolyline(pts.data(), int(pts.size()), s.colour.imgui(), 0, 2.f);
    }
    legend_x -= ImGui::CalcTextSize(s.name).x + 10;
    dl->AddText(ImVec2(legend_x, p0.y), s.colour.imgui(), s.name);
  }
  const ImU32 grey = IM_COL32(170, 170, 170, 255);
  dl->AddText(ImVec2(p0.x + 2, p0.y), grey, fmt("%.4g", y1).c_str());
  dl->AddText(ImVec2(p0.x + 2, p0.y + size.y - 14), grey, fmt("%.4g", y0).c_str());
  ImGui::PopID();
}

struct Marker {
  float x;
  Rgb colour;
  float thickness;
};

// Bars of counts over [lo, hi] (log-free, tallest bar = full height), with vertical markers.
void bars(const char* id, const std::vector<uint32_t>& counts, float lo, float hi, Rgb colour,
          const std::vector<Marker>& markers, float height, bool mark_empty = false) {
  ImGui::PushID(id);
  const ImVec2 p0 = ImGui::GetCursorScreenPos();
  const ImVec2 size(ImGui::GetContentRegionAvail().x, height);
  ImGui::InvisibleButton("bars", size);
  ImDrawList* dl = ImGui::GetWindowDrawList();
  dl->AddRectFilled(p0, ImVec2(p0.x + size.x, p0.y + size.y), IM_COL32(20, 20, 24, 255));
  const uint32_t top = counts.empty() ? 0 : *std::max_element(counts.begin(), counts.end());
  const float w = size.x / float(std::max<size_t>(1, counts.size()));
  for (size_t i = 0; i < counts.size() && top > 0; ++i) {
    const float h = (size.y - 2) * float(counts[i]) / float(top);
    const float xa = std::floor(p0.x + w * float(i)), xb = std::max(xa + 1, std::floor(p0.x + w * float(i + 1)) - (w > 3 ? 1 : 0));
    if (counts[i] > 0) dl->AddRectFilled(ImVec2(xa, std::floor(p0.y + size.y - h)), ImVec2(xb, p0.y + size.y), colour.imgui());
    if (mark_empty && counts[i] == 0)  // a dead level
      dl->AddRectFilled(ImVec2(xa, p0.y + size.y - 4), ImVec2(xb, p0.y + size.y), IM_COL32(255, 40, 40, 255));
  }
  for (const Marker& m : markers) {
    if (!(m.x >= lo && m.x <= hi)) continue;
    const float x = p0.x + (m.x - lo) / (hi - lo) * size.x;
    dl->AddLine(ImVec2(x, p0.y), ImVec2(x, p0.y + size.y), m.colour.imgui(), m.thickness);
  }
  const ImU32 grey = IM_COL32(170, 170, 170, 255);
  dl->AddText(ImVec2(p0.x + 2, p0.y + size.y - 14), grey, fmt("%.3g", lo).c_str());
  const std::string hs = fmt("%.3g", hi);
  dl->AddText(ImVec2(p0.x + size.x - ImGui::CalcTextSize(hs.c_str()).x - 2, p0.y + size.y - 14), grey, hs.c_str());
  ImGui::PopID();
}

// Exponential moving average, so per-step losses read as a curve.
std::vector<ImVec2> smoothed(const std::vector<StepPoint>& s, float StepPoint::*field) {
  std::vector<ImVec2> out;
  float ema = NAN;
  const float k = 0.9f;
  for (const StepPoint& p : s) {
    const float v = p.*field;
    if (!std::isfinite(v)) continue;
    ema = std::isfinite(ema) ? k * ema + (1 - k) * v : v;
    out.push_back({float(p.step), ema});
  }
  return out;
}

bool begin_panel(int p, float width, float height) {
  const Rect r = panel_rect(p, width, height);
  ImGui::SetNextWindowPos(ImVec2(r.x, r.y));
  ImGui::SetNextWindowSize(ImVec2(r.w, r.h));
  return ImGui::Begin(panel_title(p), nullptr,
                      ImGuiWindowFlags_NoMove | ImGuiWindowFlags_NoResize | ImGuiWindowFlags_NoCollapse |
                          ImGuiWindowFlags_NoSavedSettings);
}

const int kBitChoices[] = {1, 2, 3, 4, 5, 6, 7, 8, 32};
void bits_combo(const char* label, int& bits) {
  std::string cur = bits == 32 ? "fp32" : std::to_string(bits);
  if (ImGui::BeginCombo(label, cur.c_str())) {
    for (int b : kBitChoices)
      if (ImGui::Selectable(b == 32 ? "fp32" : std::to_string(b).c_str(), b == bits)) bits = b;
    ImGui::EndCombo();
  }
}

void run_panel(const View& v, Session* session, UiState& ui, float width, float height) {
  if (begin_panel(kRun, width, height)) {
    ImGui::TextWrapped("%s", v.title.c_str());
    ImGui::Text("step %lld / %lld   %s", (long long)v.step, (long long)v.total_steps, v.status.c_str());
    ImGui::ProgressBar(v.total_steps ? float(v.step) / float(v.total_steps) : 0.f, ImVec2(-1, 0));
    if (!v.error.empty()) ImGui::TextColored(ImVec4(1, 0.3f, 0.3f, 1), "%s", v.error.c_str());
    if (session && !v.finished) {
      if (ImGui::Button(v.paused ? "Resume" : "Pause")) session->set_paused(!v.paused);
      ImGui::SameLine();
      if (ImGui::Button("Single step")) session->single_step();
      ImGui::SameLine();
      if (ImGui::Button("Save checkpoint now")) session->save_checkpoint();
      if (!ui.edit_valid) ui.edit = v.settings, ui.edit_valid = true;
      ImGui::PushItemWidth(90);
      bits_combo("weight bits", ui.edit.wbits);
      ImGui::SameLine();
      bits_combo("act bits", ui.edit.abits);
      ImGui::Checkbox("SAT", &ui.edit.sat);
      ImGui::SameLine();
      ImGui::Checkbox("aux loss", &ui.edit.aux);
      ImGui::SameLine();
      ImGui::InputFloat("lambda", &ui.edit.aux_weight, 0, 0, "%.2f");
      ImGui::InputFloat("learning rate", &ui.edit.lr, 0, 0, "%.4f");
      ImGui::PopItemWidth();
      ImGui::SameLine();
      if (ImGui::Button("Apply")) session->apply(ui.edit);
      ImGui::SameLine();
      if (ImGui::Button("Reset")) ui.edit = v.settings;
    } else {
      const Settings& s = v.settings;
      ImGui::Text("W%s A%s  SAT %s  aux %s (lambda %.2f)  lr %.4g", s.wbits == 32 ? "fp" : std::to_string(s.wbits).c_str(),
                  s.abits == 32 ? "fp" : std::to_string(s.abits).c_str(), s.sat ? "on" : "off", s.aux ? "on" : "off",
                  s.aux_weight, s.lr);
    }
    std::vector<ImVec2> lr, speed;
    for (const StepPoint& p : v.steps) lr.push_back({float(p.step), p.lr}), speed.push_back({float(p.step), p.images_per_s});
    const float h = std::max(40.f, (ImGui::GetContentRegionAvail().y - 30) / 2);
    ImGui::Text("learning rate");
    plot("lr", {{"lr", kLrCurve, lr}}, h);
    ImGui::Text("images/s (last: %.0f)", v.steps.empty() ? 0.0 : v.steps.back().images_per_s);
    plot("speed", {{"images/s", kSpeedCurve, speed}}, h - 4);
  }
  ImGui::End();
}

const quant::StatsSnapshot* shown_snapshot(const View& v, UiState& ui) {
  if (v.stats.empty()) return nullptr;
  if (ui.snapshot >= int(v.stats.size())) ui.snapshot = -1;
  return ui.snapshot < 0 ? v.stats.back().get() : v.stats[size_t(ui.snapshot)].get();
}

void snapshot_slider(const View& v, UiState& ui) {
  int i = ui.snapshot < 0 ? int(v.stats.size()) - 1 : ui.snapshot;
  const std::string label = "step " + std::to_string(v.stats[size_t(i)]->step);
  ImGui::PushItemWidth(-1);
  if (ImGui::SliderInt("##snapshot", &i, 0, int(v.stats.size()) - 1, label.c_str()))
    ui.snapshot = i == int(v.stats.size()) - 1 ? -1 : i;
  ImGui::PopItemWidth();
}

template <class T>
int select(const char* label, const std::vector<T>& items, int& selected, int fallback) {
  if (selected < 0 || selected >= int(items.size())) selected = std::min(fallback, int(items.size()) - 1);
  ImGui::PushItemWidth(-1);
  if (ImGui::BeginCombo(label, items[size_t(selected)].name.c_str())) {
    for (size_t i = 0; i < items.size(); ++i)
      if (ImGui::Selectable((items[i].name + "  (" + items[i].quantizer + ")").c_str(), int(i) == selected)) selected = int(i);
    ImGui::EndCombo();
  }
  ImGui::PopItemWidth();
  return selected;
}

void weights_panel(const View& v, UiState& ui, float width, float height) {
  if (begin_panel(kWeights, width, height)) {
    const quant::StatsSnapshot* s = shown_snapshot(v, ui);
    if (!s) {
      ImGui::Text("waiting for the first statistics");
    } else {
      snapshot_slider(v, ui);
      const quant::WeightStats& w = s->weights[size_t(select("##layer", s->weights, ui.layer, 1))];
      ImGui::Text("%s: %lld weights, mean %.3g, Var %.3g, max|w| %.3g", w.quantizer.c_str(), (long long)w.numel, w.mean,
                  w.var, w.max_abs);
      std::vector<Marker> levels;
      for (float c : w.level_centres()) levels.push_back({c, kLevelLines, 1.5f});
      const float avail = ImGui::GetContentRegionAvail().y;
      ImGui::Text("latent weights; lines: where each %s level's centre lies", w.bits == 32 ? "(no)" : (std::to_string(w.bits) + "-bit").c_str());
      std::vector<uint32_t> hist(w.hist.begin(), w.hist.end() - 2);
      bars("hist", hist, -w.max_abs, w.max_abs, kWeightBars, levels, avail * 0.5f);
      if (!w.occupancy.empty()) {
        const auto dead = std::count(w.occupancy.begin(), w.occupancy.end(), 0u);
        ImGui::Text("level occupancy: %lld of %zu levels dead (red)", (long long)dead, w.occupancy.size());
        bars("occupancy", w.occupancy, 0, 1, kOccupancyBars, {}, ImGui::GetContentRegionAvail().y - 4, true);
      } else {
        ImGui::Text("no level occupancy (full precision or not a DoReFa quantizer)");
      }
    }
  }
  ImGui::End();
}

void activations_panel(const View& v, UiState& ui, float width, float height) {
  if (begin_panel(kActivations, width, height)) {
    const quant::StatsSnapshot* s = shown_snapshot(v, ui);
    if (!s || s->acts.empty()) {
      ImGui::Text("waiting for the first statistics");
    } else {
      const size_t i = size_t(select("##act", s->acts, ui.act, 1));
      const quant::ActStats& a = s->acts[i];
      ImGui::Text("alpha %.3f   clipped (x >= alpha) %.2f%%   below 0 %.1f%%", a.alpha, 100 * a.clipped_fraction(),
                  a.numel ? 100.0 * double(a.below_zero) / double(a.numel) : 0.0);
      std::vector<uint32_t> hist(a.hist.begin(), a.hist.end() - 2);
      std::vector<Marker> marks{{0.f, Rgb{170, 170, 170}, 1.f}};
      if (std::isfinite(a.alpha)) marks.push_back({a.alpha, kAlphaLine, 2.5f});
      const float avail = ImGui::GetContentRegionAvail().y;
      bars("acthist", hist, a.lo, a.hi, kActBars, marks, avail * 0.45f);
      std::vector<ImVec2> alpha, clipped;
      for (const auto& snap : v.stats)
        if (i < snap->acts.size() && snap->acts[i].name == a.name)
          alpha.push_back({float(snap->step), snap->acts[i].alpha}),
              clipped.push_back({float(snap->step), float(100 * snap->acts[i].clipped_fraction())});
      const float h = (ImGui::GetContentRegionAvail().y - 40) / 2;
      ImGui::Text("alpha over steps");
      plot("alpha", {{"alpha", kAlphaHistory, alpha}}, h);
      ImGui::Text("clipped %% over steps");
      plot("clipped", {{"clipped %", kActBars, clipped}}, h);
    }
  }
  ImGui::End();
}

void last_layer_panel(const View& v, float width, float height) {
  if (begin_panel(kLastLayer, width, height)) {
    if (v.stats.empty()) {
      ImGui::Text("waiting for the first statistics");
    } else {
      const quant::LastLayerStats& L = v.stats.back()->last;
      ImGui::Text("SAT %s: fc uses %s (n_out Var = %.3g)", L.sat ? "ON" : "OFF", L.sat ? "W* = Q(W) / sqrt(n_out Var)" : "Q(W)",
                  L.n_var_effective);
      ImGui::Text("n_out Var: without rescale %.3g, with %.3g   |W|: %.3g vs %.3g", L.n_out * L.var_plain,
                  L.n_out * L.var_sat, L.norm_plain, L.norm_sat);
      std::vector<ImVec2> nvar_plain, nvar_sat, norm_plain, norm_sat, logit, sat;
      for (const auto& s : v.stats) {
        const float x = float(s->step);
        nvar_plain.push_back({x, float(s->last.n_out * s->last.var_plain)});
        nvar_sat.push_back({x, float(s->last.n_out * s->last.var_sat)});
        norm_plain.push_back({x, float(s->last.norm_plain)});
        norm_sat.push_back({x, float(s->last.norm_sat)});
        logit.push_back({x, float(s->last.mean_max_logit)});
        sat.push_back({x, float(100 * s->last.mean_max_prob)});
      }
      const float h = (ImGui::GetContentRegionAvail().y - 60) / 3;
      ImGui::Text("n_out Var of the fc weight");
      plot("nvar", {{"no rescale", kPlainScale, nvar_plain}, {"SAT", kSatScale, nvar_sat}}, h);
      ImGui::Text("norm of the fc weight");
      plot("norm", {{"no rescale", kPlainScale, norm_plain}, {"SAT", kSatScale, norm_sat}}, h);
      ImGui::Text("mean max-logit / mean max softmax %% (saturated rows now: %.0f%%)", 100 * L.saturated_fraction);
      plot("logit", {{"max logit", kLogit, logit}, {"max softmax %", kSaturation, sat}}, h);
    }
  }
  ImGui::End();
}

void curves_panel(const View& v, float width, float height) {
  if (begin_panel(kCurves, width, height)) {
    std::vector<ImVec2> lp_test, aux_test;
    for (const EpochPoint& e : v.epochs)
      lp_test.push_back({float(e.step), 100 * e.test_acc}), aux_test.push_back({float(e.step), 100 * e.aux_test_acc});
    const float h = (ImGui::GetContentRegionAvail().y - 40) / 2;
    ImGui::Text("train loss (EMA of per-step values): LP head vs aux head");
    plot("loss", {{"LP", kLpCurve, smoothed(v.steps, &StepPoint::loss)}, {"aux", kAuxCurve, smoothed(v.steps, &StepPoint::aux_loss)}}, h);
    std::vector<ImVec2> lp_acc = smoothed(v.steps, &StepPoint::acc), aux_acc = smoothed(v.steps, &StepPoint::aux_acc);
    for (auto* s : {&lp_acc, &aux_acc})
      for (ImVec2& p : *s) p.y *= 100;
    ImGui::Text("accuracy %%: train (lines), test per epoch (squares)");
    plot("acc", {{"LP", kLpCurve, lp_acc}, {"aux", kAuxCurve, aux_acc}, {"LP test", kLpTest, lp_test, true},
                 {"aux test", kAuxTest, aux_test, true}}, h);
  }
  ImGui::End();
}

void gpu_panel(const View& v, float width, float height) {
  if (begin_panel(kGpuTime, width, height)) {
    const GpuTimes& g = v.gpu;
    if (g.rows.empty()) {
      ImGui::TextWrapped("no GPU times: live runs show them from step 3 on devices with timestamp queries; replays have none");
    } else {
      ImGui::Text("step %lld: %.1f ms of GPU time, %zu kinds of dispatch", (long long)g.step, g.total_ms, g.rows.size());
      if (g.complete)
        ImGui::Text("complete: all %zu commands of the step timed", g.commands);
      else
        ImGui::TextColored(ImVec4(1.f, 0.6f, 0.2f, 1.f), "incomplete: %zu of %zu commands timed, or timestamps out of order",
                           g.timed, g.commands);
      ImDrawList* dl = ImGui::GetWindowDrawList();
      const float row = ImGui::GetTextLineHeightWithSpacing();
      const size_t rows = std::min(g.rows.size(), size_t(std::max(1.f, ImGui::GetContentRegionAvail().y / row)));
      const float full = ImGui::GetContentRegionAvail().x * 0.55f, top = float(g.rows.front().ms);
      for (size_t i = 0; i < rows; ++i) {
        const LabelTime& k = g.rows[i];
        const ImVec2 p = ImGui::GetCursorScreenPos();
        const float w = std::max(1.f, std::floor(full * float(k.ms) / std::max(1e-9f, top)));
        dl->AddRectFilled(ImVec2(p.x, p.y + 2), ImVec2(p.x + w, p.y + row - 2), kGpuBars.imgui());
        ImGui::SetCursorScreenPos(ImVec2(p.x + full + 6, p.y));
        ImGui::Text("%7.2f ms %4.1f%%  %s x%d", k.ms, 100 * k.ms / std::max(1e-9, g.total_ms), k.label.c_str(), k.commands);
      }
    }
  }
  ImGui::End();
}

}  // namespace

void draw_panels(const View& view, Session* session, UiState& ui, float width, float height) {
  run_panel(view, session, ui, width, height);
  weights_panel(view, ui, width, height);
  activations_panel(view, ui, width, height);
  last_layer_panel(view, width, height);
  curves_panel(view, width, height);
  gpu_panel(view, width, height);
}

}  // namespace vkqat::viz

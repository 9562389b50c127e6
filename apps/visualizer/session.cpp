#include "session.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>

#include "backend/error.h"
#include "quant/policy.h"

namespace vkqat::viz {
namespace fs = std::filesystem;

namespace {
Settings settings_of(const nn::TrainConfig& c) {
  Settings s;
  s.wbits = c.wbits, s.abits = c.abits, s.aux = c.aux, s.aux_weight = c.aux_weight, s.lr = c.lr;
  s.sat = !c.quant.is_null() && quant::quant_config_from_json(c.quant).sat;
  return s;
}
}  // namespace

nlohmann::json GpuTimes::to_json() const {
  nlohmann::json rows_json = nlohmann::json::array();
  for (const LabelTime& r : rows)
    rows_json.push_back({{"label", r.label}, {"ms", r.ms}, {"commands", r.commands},
                         {"share", total_ms > 0 ? r.ms / total_ms : 0.0}});
  return {{"step", step}, {"commands", commands}, {"timed", timed}, {"complete", complete}, {"total_ms", total_ms},
          {"kernels", rows_json}};
}

// Runs on the training thread, between steps.
class Session::Hooks : public nn::TrainHooks {
 public:
  Hooks(Session& s, const std::string& run_dir, int every) : s_(s), stats_(run_dir, every) {}

  bool before_step(nn::Trainer& t) override {
    std::unique_lock<std::mutex> lk(s_.m_);
    while (true) {
      if (s_.quit_) return false;
      if (s_.pending_) {
        const Settings next = *s_.pending_;
        s_.pending_.reset();
        lk.unlock();
        std::string error = apply(t, next);
        lk.lock();
        s_.data_.error = error;
        s_.data_.settings = settings_of(t.config());
        s_.data_.status = error.empty() ? "settings applied at step " + std::to_string(s_.data_.step) : "settings rejected";
        continue;
      }
      if (s_.save_) {
        s_.save_ = false;
        lk.unlock();
        t.save_checkpoint();
        lk.lock();
        s_.data_.status = "checkpoint saved at step " + std::to_string(s_.data_.step);
        continue;
      }
      if (!s_.data_.paused) return true;
      if (s_.steps_allowed_ > 0) {
        --s_.steps_allowed_;
        return true;
      }
      s_.cv_.wait(lk);
    }
  }

  void after_step(nn::Trainer& t, const nn::StepReport& r) override {
    std::shared_ptr<const quant::StatsSnapshot> snap;
    if (r.step == 1 || r.step % stats_.every() == 0 || collect_next_) {
      snap = std::make_shared<quant::StatsSnapshot>(stats_.collect(t, r));
      collect_next_ = false;
    }
    std::optional<GpuTimes> gpu;
    if (r.step % 10 == 3) {  // not the first steps: drivers compile then
      const nn::StepProfile p = t.step_profile();
      if (!p.timings.empty()) {
        gpu.emplace();
        gpu->step = r.step, gpu->commands = p.commands, gpu->timed = p.timings.size(), gpu->complete = p.complete;
        for (const DispatchTiming& d : p.timings) gpu->total_ms += d.ms;
        gpu->rows = group_by_label(p.timings);
      }
    }
    std::lock_guard<std::mutex> lk(s_.m_);
    View& d = s_.data_;
    d.steps.push_back({r.step, float(r.loss), float(r.acc), r.has_aux ? float(r.aux_loss) : NAN,
                       r.has_aux ? float(r.aux_acc) : NAN, r.lr, float(r.images_per_s)});
    if (snap) d.stats.push_back(snap);
    if (gpu) d.gpu = std::move(*gpu);
    d.step = r.step;
    d.total_steps = r.steps_per_epoch * t.config().epochs;
    s_.cv_.notify_all();
  }

  void after_epoch(nn::Trainer&, const nn::EpochReport& r) override {
    std::lock_guard<std::mutex> lk(s_.m_);
    s_.data_.epochs.push_back({r.epoch, r.step, float(r.test->acc), r.test->has_aux ? float(r.test->aux_acc) : NAN});
  }

 private:
  // Returns an error message, or "" when applied.
  std::string apply(nn::Trainer& t, const Settings& next) {
    try {
      const Settings now = settings_of(t.config());
      nn::TrainConfig c = t.config();
      if (next.wbits != now.wbits || next.abits != now.abits || next.sat != now.sat || next.aux != now.aux ||
          next.aux_weight != now.aux_weight) {
        quant::QuantConfig q = c.quant.is_null() ? quant::QuantConfig{} : quant::quant_config_from_json(c.quant);
        q.wbits = next.wbits, q.abits = next.abits, q.sat = next.sat;
        q.validate();
        if (next.aux_weight < 0) throw Error("lambda must be >= 0");
        c.wbits = next.wbits, c.abits = next.abits;
        c.quant = q.any() ? q.to_json() : nlohmann::json();
        c.aux = next.aux, c.aux_weight = next.aux_weight;
        t.reconfigure(c);
        stats_.reset();        // the collector pointed into the old network
        collect_next_ = true;  // show the new quantizers at once
      }
      if (next.lr != t.config().lr) t.set_learning_rate(next.lr);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  }

  Session& s_;
  quant::StatsRecorder stats_;
  bool collect_next_ = false;
};

Session::Session(std::unique_ptr<nn::Trainer> trainer, int stats_every, std::string title) : trainer_(std::move(trainer)) {
  hooks_ = std::make_unique<Hooks>(*this, trainer_->config().out, stats_every);
  trainer_->set_hooks(hooks_.get());
  data_.title = std::move(title);
  data_.live = true;
  data_.settings = settings_of(trainer_->config());
  data_.step = trainer_->step();
  data_.total_steps = trainer_->steps_per_epoch() * trainer_->config().epochs;
  data_.status = "training";
}

Session::~Session() { join(); }

void Session::join() {
  quit();
  if (worker_.joinable()) worker_.join();
}

void Session::start() {
  worker_ = std::thread([this] { run_worker(); });
}

void Session::run_worker() {
  std::string error;
  nn::TrainSummary summary;
  try {
    summary = trainer_->run();
  } catch (const std::exception& e) {
    error = e.what();
  }
  std::lock_guard<std::mutex> lk(m_);
  data_.finished = true;
  data_.error = error.empty() ? data_.error : error;
  data_.status = !error.empty() ? "training failed" : summary.interrupted ? "stopped (checkpointed)" : "finished";
  cv_.notify_all();
}

std::unique_ptr<Session> Session::replay(const std::string& dir) {
  if (!fs::is_directory(dir)) throw Error("--replay " + dir + ": not a directory");
  std::ifstream metrics(fs::path(dir) / "metrics.jsonl");
  if (!metrics) throw Error("--replay " + dir + ": no readable metrics.jsonl (not a vkqat run directory?)");
  std::unique_ptr<Session> s(new Session());
  View& d = s->data_;
  for (const quant::StatsSnapshot& snap : quant::read_stats_file(dir)) {
    const quant::StepScalars& c = snap.scalars;
    d.steps.push_back({snap.step, float(c.loss), float(c.acc), c.has_aux ? float(c.aux_loss) : NAN,
                       c.has_aux ? float(c.aux_acc) : NAN, float(c.lr), float(c.images_per_s)});
    d.stats.push_back(std::make_shared<quant::StatsSnapshot>(snap));
  }
  if (d.stats.empty()) throw Error("--replay " + dir + ": " + quant::kStatsFileName + " holds no statistics");
  int line_no = 0;
  for (std::string line; std::getline(metrics, line);) {
    ++line_no;
    auto r = nlohmann::json::parse(line, nullptr, false);
    if (r.is_discarded()) throw Error("--replay " + dir + ": metrics.jsonl line " + std::to_string(line_no) + " is not JSON");
    if (r.value("type", "") != "epoch") continue;
    const auto aux = r.value("aux_test_acc", nlohmann::json());
    d.epochs.push_back({r.value("epoch", 0), r.value("step", int64_t(0)), r.value("test_acc", 0.f),
                        aux.is_number() ? aux.get<float>() : NAN});
  }
  std::ifstream summary(fs::path(dir) / "summary.json");
  auto sum = nlohmann::json::parse(summary, nullptr, false);
  if (!sum.is_discarded() && sum.contains("config")) {
    nn::TrainConfig c = nn::TrainConfig::from_json(sum["config"]);
    d.settings = settings_of(c);
  }
  d.title = "replay of " + dir;
  d.step = d.total_steps = d.steps.back().step;
  d.finished = true;
  d.status = "replay";
  return s;
}

View Session::view() {
  std::lock_guard<std::mutex> lk(m_);
  return data_;
}

int64_t Session::steps_done() {
  std::lock_guard<std::mutex> lk(m_);
  return data_.step;
}

int64_t Session::wait_for_step_after(int64_t step) {
  std::unique_lock<std::mutex> lk(m_);
  cv_.wait(lk, [&] { return data_.step > step || data_.finished; });
  return data_.step;
}

void Session::set_paused(bool paused) {
  std::lock_guard<std::mutex> lk(m_);
  data_.paused = paused;
  data_.status = paused ? "paused" : "training";
  cv_.notify_all();
}

void Session::single_step() {
  std::lock_guard<std::mutex> lk(m_);
  data_.paused = true;
  ++steps_allowed_;
  cv_.notify_all();
}

void Session::apply(const Settings& s) {
  std::lock_guard<std::mutex> lk(m_);
  pending_ = s;
  if (data_.paused) ++steps_allowed_;  // take effect (and show) at the next step
  cv_.notify_all();
}

void Session::save_checkpoint() {
  std::lock_guard<std::mutex> lk(m_);
  save_ = true;
  cv_.notify_all();
}

void Session::quit() {
  std::lock_guard<std::mutex> lk(m_);
  quit_ = true;
  cv_.notify_all();
}

std::string Session::error() {
  std::lock_guard<std::mutex> lk(m_);
  return data_.error;
}

}  // namespace vkqat::viz

#include "quant/int_infer.h"

#include <algorithm>
#include <chrono>

#include "backend/error.h"
#include "nn/data/loader.h"
#include "nn/train/checkpoint.h"
#include "quant/int_engine.h"
#include "quant/policy.h"

namespace vkqat::quant {
namespace {
double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
}  // namespace

int argmax_row(const float* logits, int classes) { return int(std::max_element(logits, logits + classes) - logits); }

void check_int_model_data(const IntModel& m, const nn::Dataset& data, const std::string& model_path) {
  const nn::ModelConfig& mc = m.model;
  if (mc.in_channels != data.channels || mc.height != data.height || mc.width_px != data.width ||
      mc.classes != data.classes)
    throw Error(model_path + " expects " + std::to_string(mc.in_channels) + "x" + std::to_string(mc.height) + "x" +
                std::to_string(mc.width_px) + " images with " + std::to_string(mc.classes) + " classes; dataset " +
                data.name + " has " + std::to_string(data.channels) + "x" + std::to_string(data.height) + "x" +
                std::to_string(data.width) + " with " + std::to_string(data.classes));
}

IntInferReport infer_int_model(Context& ctx, const IntModel& m, const nn::Dataset& data, int throughput_batch,
                               int latency_images) {
  IntInferReport r;
  r.images = data.n;
  r.throughput_batch = throughput_batch;
  const size_t image = data.image_size();
  const int classes = m.model.classes;
  {
    IntEngine engine(ctx, m, throughput_batch);
    r.predictions.resize(size_t(data.n));
    int correct = 0;
    const double t0 = now_ms();
    for (int i0 = 0; i0 < data.n; i0 += throughput_batch) {
      const int count = std::min(throughput_batch, data.n - i0);
      std::vector<uint8_t> px(data.image(i0), data.image(i0) + size_t(count) * image);
      const std::vector<float> logits = engine.run(px, count);
      for (int i = 0; i < count; ++i) {
        r.predictions[i0 + i] = argmax_row(&logits[size_t(i) * classes], classes);
        correct += r.predictions[i0 + i] == int(data.labels[i0 + i]);
      }
    }
    r.throughput_images_per_s = data.n * 1000.0 / std::max(1e-9, now_ms() - t0);
    r.accuracy = double(correct) / std::max(1, data.n);
  }
  r.latency_images = std::min(latency_images, data.n);
  if (r.latency_images > 0) {
    IntEngine engine(ctx, m, 1);
    engine.run(std::vector<uint8_t>(data.image(0), data.image(0) + image), 1);  // warm-up
    std::vector<double> ms;
    for (int i = 0; i < r.latency_images; ++i) {
      const double t0 = now_ms();
      engine.run(std::vector<uint8_t>(data.image(i), data.image(i) + image), 1);
      ms.push_back(now_ms() - t0);
    }
    for (double v : ms) r.latency_ms_mean += v / double(ms.size());
    std::sort(ms.begin(), ms.end());
    r.latency_ms_median = ms[ms.size() / 2];
  }
  return r;
}

std::vector<int> fake_quant_predictions(Context& ctx, const std::string& checkpoint, const nn::Dataset& data, int batch) {
  const nn::SafeTensors st = nn::read_safetensors(checkpoint);
  const nlohmann::json meta = nn::checkpoint_metadata(st);
  if (meta.is_null() || !meta.contains("model")) throw Error(checkpoint + " has no vkqat metadata");
  nn::ModelConfig mc = nn::ModelConfig::from_json(meta["model"]);
  mc.forward_only = true;  // logits only: no gradient buffers, activations reused
  batch = std::max(1, std::min(batch, data.n));
  auto net = nn::build_network(ctx, mc, batch);
  const nlohmann::json quant = meta.value("quant", nlohmann::json());
  if (!quant.is_null()) net->apply_quant_policy(*quant_plugins().policy(quant));
  nn::load_network_state(*net, st, {"aux."});
  Recording rec(ctx);
  net->forward(rec, /*train=*/false);
  rec.finish();
  nn::BatchLoader loader(data, batch, false, 0);
  loader.start_epoch(0);
  nn::Batch b;
  std::vector<int> pred;
  std::vector<float> x(size_t(net->input().numel()));
  while (loader.next(b)) {
    std::fill(x.begin(), x.end(), 0.f);
    std::copy(b.x.begin(), b.x.end(), x.begin());
    net->input().upload(x);
    rec.run();
    const std::vector<float> logits = net->logits().download();
    for (int i = 0; i < b.size; ++i) pred.push_back(argmax_row(&logits[size_t(i) * mc.classes], mc.classes));
  }
  return pred;
}

}  // namespace vkqat::quant

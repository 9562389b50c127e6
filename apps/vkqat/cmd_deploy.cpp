// `vkqat export` (quantization-aware checkpoint -> integer model) and `vkqat infer`
// (integer inference on the GPU: accuracy, latency at batch 1, throughput at batch 64, and
// agreement with the fake-quant checkpoint when --checkpoint is given).
#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <iostream>

#include "backend/context.h"
#include "backend/error.h"
#include "commands.h"
#include "nn/data/dataset.h"
#include "nn/model/model_builders.h"
#include "quant/int_engine.h"
#include "quant/int_export.h"
#include "quant/int_infer.h"

namespace vkqat::cli {
namespace {

struct InferArgs {
  std::string model, data = "fashion-mnist", data_dir, checkpoint, augment;
  int limit = 0, batch = 64, latency_images = 200, device = -1;
  bool json = false;
};

int run_export(const std::string& checkpoint, const std::string& out) {
  std::error_code ec;
  if (std::filesystem::equivalent(checkpoint, out, ec) ||
      std::filesystem::weakly_canonical(checkpoint, ec) == std::filesystem::weakly_canonical(out, ec))
    throw Error("--out " + out + " is the --checkpoint file itself; write the integer model to another path");
  const quant::IntModel m = quant::export_int_model(checkpoint);
  quant::write_int_model(out, m);
  const auto in_bytes = std::filesystem::file_size(checkpoint), out_bytes = std::filesystem::file_size(out);
  std::printf("%s: integer %s (%s, %d convs, %zu layers), %llu bytes (%.1fx smaller than %s, %llu bytes)\n",
              out.c_str(), m.model.name.c_str(), nn::size_label(m.model).c_str(), m.count(quant::IntOp::Conv), m.nodes.size(),
              (unsigned long long)out_bytes,
              double(in_bytes) / double(out_bytes), checkpoint.c_str(), (unsigned long long)in_bytes);
  return 0;
}

int run_infer(const InferArgs& a) {
  ContextOptions co;
  co.device = a.device;
  Context ctx(co);
  const quant::IntModel m = quant::read_int_model(a.model);
  // Folder/cache data: the model's image size and channels, the eval transform of --augment,
  // decoded into memory (integer inference reads raw pixels).
  nn::DataOptions data_opt;
  if (a.data == "folder" || a.data == "cache") {
    data_opt.image_size = m.model.height;
    data_opt.in_channels = a.data == "folder" ? m.model.in_channels : 0;
    data_opt.augment = a.augment;
  }
  nn::Dataset test = nn::load_test_split(a.data, a.data_dir, data_opt);
  if (a.limit > 0) test = nn::first_n(test, a.limit);
  test = nn::materialize(test);
  quant::check_int_model_data(m, test, a.model);
  if (a.batch < 1) throw Error("--batch-size must be >= 1");
  const quant::IntInferReport r = quant::infer_int_model(ctx, m, test, a.batch, a.latency_images);
  nlohmann::json out = {{"model", a.model},
                        {"images", r.images},
                        {"test_acc", r.accuracy},
                        {"latency_ms_batch1_mean", r.latency_ms_mean},
                        {"latency_ms_batch1_median", r.latency_ms_median},
                        {"latency_images", r.latency_images},
                        {"throughput_batch", r.throughput_batch},
                        {"throughput_images_per_s", r.throughput_images_per_s},
                        {"conv_variant", quant::int_conv_variant(ctx)},
                        {"device", ctx.info().name}};
  if (!a.checkpoint.empty()) {
    const std::vector<int> fq = quant::fake_quant_predictions(ctx, a.checkpoint, test, 100);
    int agree = 0, fq_correct = 0;
    for (int i = 0; i < test.n; ++i) {
      agree += fq[i] == r.predictions[i];
      fq_correct += fq[i] == int(test.labels[i]);
    }
    out["checkpoint"] = a.checkpoint;
    out["fake_quant_test_acc"] = double(fq_correct) / test.n;
    out["agreement"] = double(agree) / test.n;
    out["disagreements"] = test.n - agree;
  }
  // Per-class accuracy of the integer model, named when the dataset has class names.
  std::vector<int> class_total(size_t(test.classes), 0), class_correct(size_t(test.classes), 0);
  for (int i = 0; i < test.n && i < int(r.predictions.size()); ++i) {
    const int y = test.labels[size_t(i)];
    class_total[size_t(y)]++;
    class_correct[size_t(y)] += r.predictions[size_t(i)] == y;
  }
  nlohmann::json per_class = nlohmann::json::array();
  for (int k = 0; k < test.classes; ++k)
    per_class.push_back({{"class", size_t(k) < test.class_names.size() ? test.class_names[size_t(k)] : std::to_string(k)},
                         {"images", class_total[size_t(k)]},
                         {"acc", class_total[size_t(k)] ? nlohmann::json(double(class_correct[size_t(k)]) / class_total[size_t(k)])
                                                        : nlohmann::json()}});
  out["per_class"] = per_class;
  if (a.json) {
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  std::printf("%s: test_acc %.4f (%d images)  latency %.3f ms/image (batch 1, median %.3f)  throughput %.1f images/s "
              "(batch %d)  [%s, %s]\n",
              a.model.c_str(), r.accuracy, r.images, r.latency_ms_mean, r.latency_ms_median, r.throughput_images_per_s,
              r.throughput_batch, quant::int_conv_variant(ctx).c_str(), ctx.info().name.c_str());
  if (!a.checkpoint.empty())
    std::printf("fake-quant %s: test_acc %.4f  agreement %.4f%% (%d of %d images differ)\n", a.checkpoint.c_str(),
                out["fake_quant_test_acc"].get<double>(), 100 * out["agreement"].get<double>(),
                out["disagreements"].get<int>(), r.images);
  for (const nlohmann::json& c : per_class)
    if (c["images"].get<int>() > 0)
      std::printf("  %-24s %6.2f%%  (%d images)\n", c["class"].get<std::string>().c_str(), 100 * c["acc"].get<double>(),
                  c["images"].get<int>());
  return 0;
}

}  // namespace

void add_deploy_commands(CLI::App& app, Actions& actions) {
  auto in = std::make_shared<std::string>(), out = std::make_shared<std::string>();
  auto* ex = app.add_subcommand("export", "write the deployable integer model (BN folded, packed integer weights)");
  ex->add_option("--checkpoint", *in, "quantization-aware checkpoint (safetensors)")->required();
  ex->add_option("--out", *out, "integer model file (safetensors)")->required();
  ex->callback([&actions, in, out] { actions.push_back([=] { return run_export(*in, *out); }); });

  auto a = std::make_shared<InferArgs>();
  auto* inf = app.add_subcommand("infer", "integer inference: accuracy, latency (batch 1), throughput (batch 64)");
  inf->add_option("--model", a->model, "integer model from `vkqat export`")->required();
  inf->add_option("--data", a->data, "dataset")->capture_default_str();
  inf->add_option("--data-dir", a->data_dir, "dataset directory");
  inf->add_option("--augment", a->augment, "folder/cache: the training's --augment (selects the eval transform: imagenet = resize to size/0.875 + center crop)");
  inf->add_option("--limit", a->limit, "only the first K test images")->check(CLI::NonNegativeNumber);
  inf->add_option("--batch-size", a->batch, "throughput batch size")->capture_default_str()->check(CLI::PositiveNumber);
  inf->add_option("--latency-images", a->latency_images, "images timed one by one at batch 1")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  inf->add_option("--checkpoint", a->checkpoint, "fake-quant checkpoint to compare predictions with");
  inf->add_option("--device", a->device, "Vulkan device index")->check(CLI::NonNegativeNumber);
  inf->add_flag("--json", a->json, "machine-readable output");
  inf->callback([&actions, a] { actions.push_back([a] { return run_infer(*a); }); });
}

}  // namespace vkqat::cli

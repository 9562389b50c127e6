#pragma once
// `vkqat infer`: accuracy, latency and throughput of an integer model on a dataset's test
// images, and its agreement with the fake-quant checkpoint it came from.
#include <string>
#include <vector>

#include "nn/data/dataset.h"
#include "quant/int_model.h"

namespace vkqat::quant {

// Throws Error naming the model file and both shapes unless the images fit the model.
void check_int_model_data(const IntModel& m, const nn::Dataset& data, const std::string& model_path);

struct IntInferReport {
  int images = 0;
  double accuracy = 0;
  std::vector<int> predictions;
  int latency_images = 0;
  double latency_ms_mean = 0, latency_ms_median = 0;  // batch 1, upload + run + download
  int throughput_batch = 0;
  double throughput_images_per_s = 0;  // whole test set, including transfers
};
// latency_images: how many images to time one by one at batch 1 (0: skip).
IntInferReport infer_int_model(Context& ctx, const IntModel& m, const nn::Dataset& data, int throughput_batch,
                               int latency_images);

// Argmax predictions of the fake-quant (training-graph, eval mode) model of a checkpoint.
std::vector<int> fake_quant_predictions(Context& ctx, const std::string& checkpoint, const nn::Dataset& data, int batch);

int argmax_row(const float* logits, int classes);

}  // namespace vkqat::quant

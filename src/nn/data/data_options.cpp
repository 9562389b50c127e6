#include "nn/data/data_options.h"

#include <thread>

#include "backend/error.h"
#include "nn/json_number.h"
#include "nn/data/image_transform.h"

namespace vkqat::nn {

bool DataOptions::any() const {
  return image_size != 0 || !augment.empty() || workers != 0 || val_split != 0 || in_channels != 0 || !mean.empty() ||
         !std.empty() || strict;
}

int DataOptions::resolved_workers() const {
  if (workers > 0) return workers;
  return int(std::max(1u, std::thread::hardware_concurrency()));
}

nlohmann::json DataOptions::to_json() const {
  return {{"image_size", image_size}, {"augment", augment},         {"workers", workers}, {"val_split", val_split},
          {"in_channels", in_channels}, {"mean", mean},             {"std", std},         {"strict", strict}};
}

DataOptions DataOptions::from_json(const nlohmann::json& j) {
  DataOptions o;
  if (j.is_null()) return o;
  try {
    // Integers through json_int: a float such as 7e73 converted to int is undefined behaviour.
    auto int_field = [&](const char* key) { return j.contains(key) ? json_int<int>(j[key], key) : 0; };
    o.image_size = int_field("image_size");
    o.augment = j.value("augment", std::string());
    o.workers = int_field("workers");
    o.val_split = j.value("val_split", 0.0);
    o.in_channels = int_field("in_channels");
    o.mean = j.value("mean", std::vector<float>());
    o.std = j.value("std", std::vector<float>());
    o.strict = j.value("strict", false);
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("data options: ") + e.what());
  } catch (const Error& e) {
    throw Error(std::string("data options: ") + e.what());
  }
  return o;
}

void DataOptions::validate() const {
  if (image_size < 0 || image_size == 1 || image_size > 4096)
    throw Error("--image-size " + std::to_string(image_size) + ": expected 2..4096");
  if (!augment.empty()) parse_augment_mode(augment);
  if (workers < 0 || workers > 256) throw Error("--workers " + std::to_string(workers) + ": expected 1..256 (0 = every core)");
  if (!(val_split >= 0 && val_split < 1)) throw Error("--val-split " + std::to_string(val_split) + ": expected [0, 1)");
  if (in_channels != 0 && in_channels != 1 && in_channels != 3)
    throw Error("--in-channels " + std::to_string(in_channels) + ": expected 1 or 3");
  for (auto* v : {&mean, &std}) {
    const char* flag = v == &mean ? "--mean" : "--std";
    if (!v->empty() && v->size() != 1 && v->size() != 3)
      throw Error(std::string(flag) + ": give one value or three (one per channel)");
    for (float x : *v)
      if (!(x == x) || (v == &std && !(x > 0)))
        throw Error(std::string(flag) + ": values must be finite" + (v == &std ? " and positive" : ""));
  }
}

}  // namespace vkqat::nn

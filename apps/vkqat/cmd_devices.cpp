// `vkqat devices [--json]`: every Vulkan device with the features vkqat cares about.
#include <nlohmann/json.hpp>

#include <cstdio>
#include <iostream>

#include "backend/context.h"
#include "commands.h"

namespace vkqat::cli {
namespace {

nlohmann::json to_json(const DeviceInfo& d, bool selected) {
  return {{"index", d.index},
          {"selected", selected},
          {"name", d.name},
          {"type", d.type},
          {"driver", d.driver_name},
          {"driver_info", d.driver_info},
          {"api_version", std::to_string(VK_API_VERSION_MAJOR(d.api_version)) + "." +
                              std::to_string(VK_API_VERSION_MINOR(d.api_version)) + "." +
                              std::to_string(VK_API_VERSION_PATCH(d.api_version))},
          {"subgroup_size", d.subgroup_size},
          {"subgroup_size_range", {d.min_subgroup_size, d.max_subgroup_size}},
          {"subgroup_size_control", d.subgroup_size_control},
          {"subgroup_shuffle", d.subgroup_shuffle},
          {"subgroup_arithmetic", d.subgroup_arithmetic},
          {"shader_float16", d.shader_float16},
          {"shader_int8", d.shader_int8},
          {"storage_buffer_16bit", d.storage_buffer_16bit},
          {"storage_buffer_8bit", d.storage_buffer_8bit},
          {"integer_dot_product", d.integer_dot_product},
          {"integer_dot_product_4x8_accelerated", d.integer_dot_4x8_packed_accelerated},
          {"integer_dot_product_4x8_unsigned_accelerated", d.integer_dot_4x8_packed_unsigned_accelerated},
          {"cooperative_matrix", d.cooperative_matrix},
          {"max_workgroup_size", d.max_workgroup_size},
          {"max_workgroup_invocations", d.max_workgroup_invocations},
          {"max_workgroup_count", d.max_workgroup_count},
          {"max_shared_memory_bytes", d.max_shared_memory},
          {"max_allocation_bytes", d.max_allocation},
          {"max_storage_buffer_range", d.max_storage_buffer_range},
          {"max_storage_buffers_per_stage", d.max_storage_buffers_per_stage},
          {"portability_subset", d.portability_subset},
          {"profile", d.profile.empty() ? "none" : d.profile},
          {"device_local_bytes", d.device_local_bytes},
          {"timestamps", d.timestamps}};
}

int run_devices(bool json) {
  auto devices = enumerate_devices();
  int selected = -1;
  try {
    selected = select_device(devices, -1);
  } catch (const std::exception&) {
  }
  if (json) {
    nlohmann::json out = nlohmann::json::array();
    for (auto& d : devices) out.push_back(to_json(d, d.index == selected));
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  auto yn = [](bool b) { return b ? "yes" : "no"; };
  const std::string profile = device_profile_from_env();
  if (!profile.empty())
    std::printf("device profile: %s (VKQAT_DEVICE_PROFILE; the limits below are clamped to it)\n", profile.c_str());
  for (auto& d : devices) {
    std::printf("%s%d: %s (%s)\n", d.index == selected ? "* " : "  ", d.index, d.name.c_str(), d.type.c_str());
    std::printf("     driver %s %s, Vulkan %u.%u\n", d.driver_name.c_str(), d.driver_info.c_str(),
                VK_API_VERSION_MAJOR(d.api_version), VK_API_VERSION_MINOR(d.api_version));
    std::printf("     subgroup %u (%u..%u, size control %s, shuffle %s, arithmetic %s), fp16 %s, int8 %s, "
                "int dot product %s (4x8 packed accelerated: signed %s, unsigned %s), coop matrix %s\n",
                d.subgroup_size, d.min_subgroup_size, d.max_subgroup_size, yn(d.subgroup_size_control), yn(d.subgroup_shuffle),
                yn(d.subgroup_arithmetic), yn(d.shader_float16), yn(d.shader_int8), yn(d.integer_dot_product),
                yn(d.integer_dot_4x8_packed_accelerated), yn(d.integer_dot_4x8_packed_unsigned_accelerated),
                yn(d.cooperative_matrix));
    std::printf("     workgroup size <= %u (%u,%u,%u), count <= (%u,%u,%u), shared %u KiB, max alloc %llu MiB, "
                "device-local %llu MiB\n",
                d.max_workgroup_invocations, d.max_workgroup_size[0], d.max_workgroup_size[1], d.max_workgroup_size[2],
                d.max_workgroup_count[0], d.max_workgroup_count[1], d.max_workgroup_count[2], d.max_shared_memory / 1024,
                (unsigned long long)(d.max_allocation >> 20), (unsigned long long)(d.device_local_bytes >> 20));
    std::printf("     storage buffers per stage <= %u, storage buffer range <= %llu MiB%s\n",
                d.max_storage_buffers_per_stage, (unsigned long long)(d.max_storage_buffer_range >> 20),
                d.portability_subset ? ", portability subset" : "");
  }
  return 0;
}

}  // namespace

void add_devices_command(CLI::App& app, Actions& actions) {
  auto* cmd = app.add_subcommand("devices", "list Vulkan devices and their compute features (* = default)");
  auto json = std::make_shared<bool>(false);
  cmd->add_flag("--json", *json, "machine-readable output");
  cmd->callback([&actions, json] { actions.push_back([json] { return run_devices(*json); }); });
}

}  // namespace vkqat::cli

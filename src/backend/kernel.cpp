#include "backend/kernel.h"

#include <spirv_cross/spirv_cross.hpp>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <unistd.h>

#include "backend/context.h"
#include "backend/error.h"

namespace vkqat {
namespace fs = std::filesystem;

namespace {

struct Reflection {
  std::vector<BindingInfo> bindings;
  uint32_t push_bytes = 0;
  std::array<uint32_t, 3> literal_local{1, 1, 1};
  std::array<bool, 3> local_is_spec{false, false, false};
  std::vector<uint32_t> spec_ids;  // constant_ids >= 3 declared by the shader
};

Reflection reflect(const std::string& name, const ShaderBlob& blob) {
  Reflection r;
  try {
    spirv_cross::Compiler comp(blob.words, blob.word_count);
    auto res = comp.get_shader_resources();
    if (!res.uniform_buffers.empty() || !res.storage_images.empty() || !res.sampled_images.empty())
      throw Error("shader " + name + ": only storage buffers and push constants are supported");
    for (const auto& sb : res.storage_buffers) {
      if (comp.get_decoration(sb.id, spv::DecorationDescriptorSet) != 0)
        throw Error("shader " + name + ": buffer " + sb.name + " must be in descriptor set 0");
      BindingInfo b;
      b.binding = comp.get_decoration(sb.id, spv::DecorationBinding);
      b.name = sb.name;
      auto flags = comp.get_buffer_block_flags(sb.id);
      b.reads = !flags.get(spv::DecorationNonReadable);
      b.writes = !flags.get(spv::DecorationNonWritable);
      r.bindings.push_back(b);
    }
    std::sort(r.bindings.begin(), r.bindings.end(),
              [](const BindingInfo& a, const BindingInfo& b) { return a.binding < b.binding; });
    for (size_t i = 0; i < r.bindings.size(); ++i)
      if (r.bindings[i].binding != i)
        throw Error("shader " + name + ": buffer bindings must be 0..n-1 without gaps");
    for (const auto& pc : res.push_constant_buffers)
      r.push_bytes = uint32_t(comp.get_declared_struct_size(comp.get_type(pc.base_type_id)));
    spirv_cross::SpecializationConstant wg[3];
    comp.get_work_group_size_specialization_constants(wg[0], wg[1], wg[2]);
    for (int i = 0; i < 3; ++i) {
      r.literal_local[i] = comp.get_execution_mode_argument(spv::ExecutionModeLocalSize, uint32_t(i));
      r.local_is_spec[i] = uint32_t(wg[i].id) != 0;
      if (r.local_is_spec[i] && wg[i].constant_id != uint32_t(i))
        throw Error("shader " + name + ": local_size_" + "xyz"[i] + "_id must be " + std::to_string(i));
    }
    for (const auto& sc : comp.get_specialization_constants())
      if (sc.constant_id >= 3) r.spec_ids.push_back(sc.constant_id);
    std::sort(r.spec_ids.begin(), r.spec_ids.end());
  } catch (const spirv_cross::CompilerError& e) {
    throw Error("shader " + name + ": SPIR-V reflection failed: " + e.what());
  }
  return r;
}

std::string hex(const uint8_t* p, size_t n) {
  static const char* digits = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < n; ++i) s += digits[p[i] >> 4], s += digits[p[i] & 15];
  return s;
}

}  // namespace

uint32_t pick_workgroup_size(const DeviceInfo& info, uint32_t preferred, uint32_t shared_bytes_per_invocation,
                             uint32_t fixed_shared_bytes) {
  const uint32_t limit = std::min(info.max_workgroup_invocations, info.max_workgroup_size[0]);
  uint32_t size = 1;
  while (size * 2 <= preferred && size * 2 <= limit &&
         fixed_shared_bytes + uint64_t(shared_bytes_per_invocation) * size * 2 <= info.max_shared_memory)
    size *= 2;
  return size;
}

std::string KernelCache::cache_path(const DeviceInfo& info) {
  fs::path dir;
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x)
    dir = x;
  else if (const char* h = std::getenv("HOME"); h && *h)
    dir = fs::path(h) / ".cache";
  else
    return "";
  return (dir / "vkqat" / ("pipelines-" + hex(info.pipeline_cache_uuid.data(), VK_UUID_SIZE) + ".bin")).string();
}

KernelCache::KernelCache(VkDevice device, const DeviceInfo& info, bool persist)
    : device_(device), info_(info), persist_(persist) {
  std::vector<char> data;
  if (persist_) {
    std::string path = cache_path(info_);
    std::ifstream in(path, std::ios::binary);
    if (in) data.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    // Only hand the driver a cache written for this exact device and driver build.
    const size_t header = 16 + VK_UUID_SIZE;
    uint32_t vendor = 0, device_id = 0;
    if (data.size() >= header) {
      std::memcpy(&vendor, data.data() + 8, 4);
      std::memcpy(&device_id, data.data() + 12, 4);
    }
    if (data.size() < header || vendor != info_.vendor_id || device_id != info_.device_id ||
        std::memcmp(data.data() + 16, info_.pipeline_cache_uuid.data(), VK_UUID_SIZE) != 0)
      data.clear();
  }
  VkPipelineCacheCreateInfo ci{VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO};
  ci.initialDataSize = data.size();
  ci.pInitialData = data.empty() ? nullptr : data.data();
  if (vkCreatePipelineCache(device_, &ci, nullptr, &cache_) != VK_SUCCESS) {
    ci.initialDataSize = 0;  // a corrupt cache file is not an error: start empty
    ci.pInitialData = nullptr;
    vk_check(vkCreatePipelineCache(device_, &ci, nullptr, &cache_), "vkCreatePipelineCache");
  }
}

KernelCache::~KernelCache() {
  for (auto& [key, k] : kernels_) {
    vkDestroyPipeline(device_, k->pipeline_, nullptr);
    vkDestroyPipelineLayout(device_, k->layout_, nullptr);
    vkDestroyDescriptorSetLayout(device_, k->set_layout_, nullptr);
  }
  if (cache_) vkDestroyPipelineCache(device_, cache_, nullptr);
}

void KernelCache::save() {
  if (!persist_ || kernels_.empty()) return;
  std::string path = cache_path(info_);
  if (path.empty()) return;
  size_t size = 0;
  vk_check(vkGetPipelineCacheData(device_, cache_, &size, nullptr), "vkGetPipelineCacheData");
  std::vector<char> data(size);
  vk_check(vkGetPipelineCacheData(device_, cache_, &size, data.data()), "vkGetPipelineCacheData");
  std::error_code ec;
  fs::create_directories(fs::path(path).parent_path(), ec);
  std::string tmp = path + ".tmp" + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw Error("cannot write pipeline cache " + tmp);
    out.write(data.data(), std::streamsize(size));
    if (!out) throw Error("cannot write pipeline cache " + tmp);
  }
  fs::rename(tmp, path, ec);
  if (ec) throw Error("cannot rename pipeline cache to " + path + ": " + ec.message());
}

const Kernel& KernelCache::get(const std::string& shader, std::array<uint32_t, 3> local_size,
                               const std::vector<uint32_t>& spec, uint32_t required_subgroup_size) {
  std::string key = shader + "|" + std::to_string(local_size[0]) + "," + std::to_string(local_size[1]) + "," +
                    std::to_string(local_size[2]);
  for (uint32_t v : spec) key += "," + std::to_string(v);
  if (required_subgroup_size) key += "|sg" + std::to_string(required_subgroup_size);
  if (auto it = kernels_.find(key); it != kernels_.end()) return *it->second;

  const ShaderBlob* blob = find_shader(shader);
  if (!blob) throw Error("unknown shader '" + shader + "' (not compiled into this build)");
  Reflection refl = reflect(shader, *blob);
  if (spec.size() > refl.spec_ids.size())
    throw Error("shader " + shader + ": " + std::to_string(spec.size()) + " specialization constants given, it declares " +
                std::to_string(refl.spec_ids.size()));

  auto k = std::make_unique<Kernel>();
  k->name_ = shader;
  k->bindings_ = refl.bindings;
  k->push_bytes_ = refl.push_bytes;
  uint64_t invocations = 1;
  for (int i = 0; i < 3; ++i) {
    k->local_size_[i] = refl.local_is_spec[i] ? local_size[i] : refl.literal_local[i];
    if (k->local_size_[i] == 0 || k->local_size_[i] > info_.max_workgroup_size[i])
      throw Error("shader " + shader + ": local size " + "xyz"[i] + " = " + std::to_string(k->local_size_[i]) +
                  " exceeds the device limit " + std::to_string(info_.max_workgroup_size[i]));
    invocations *= k->local_size_[i];
  }
  if (invocations > info_.max_workgroup_invocations)
    throw Error("shader " + shader + ": " + std::to_string(invocations) + " invocations per workgroup exceed the device limit " +
                std::to_string(info_.max_workgroup_invocations));
  if (refl.push_bytes > info_.max_push_constants)
    throw Error("shader " + shader + ": push constants of " + std::to_string(refl.push_bytes) +
                " bytes exceed the device's maxPushConstantsSize " + std::to_string(info_.max_push_constants) +
                info_.profile_note());
  // Ops check this limit before choosing a fused kernel (and fall back to unfused ones);
  // reaching it here means no variant of the op fits the device.
  if (info_.max_storage_buffers_per_stage && refl.bindings.size() > info_.max_storage_buffers_per_stage)
    throw Error("shader " + shader + " binds " + std::to_string(refl.bindings.size()) +
                " storage buffers, more than the device's maxPerStageDescriptorStorageBuffers " +
                std::to_string(info_.max_storage_buffers_per_stage) + info_.profile_note());
  if (required_subgroup_size) {
    const uint32_t sg = required_subgroup_size;
    if (!info_.subgroup_size_control)
      throw Error("shader " + shader + " needs subgroups of " + std::to_string(sg) +
                  " lanes, but the device has no subgroup size control (computeFullSubgroups)" + info_.profile_note());
    if (sg < info_.min_subgroup_size || sg > info_.max_subgroup_size || (sg & (sg - 1)) || invocations % sg ||
        k->local_size_[0] % sg)
      throw Error("shader " + shader + ": subgroup size " + std::to_string(sg) + " is not in the device's range [" +
                  std::to_string(info_.min_subgroup_size) + ", " + std::to_string(info_.max_subgroup_size) +
                  "] or does not divide local size x " + std::to_string(k->local_size_[0]));
    k->required_subgroup_size_ = sg;
  }

  std::vector<VkDescriptorSetLayoutBinding> dslb;
  for (const BindingInfo& b : refl.bindings) {
    VkDescriptorSetLayoutBinding l{};
    l.binding = b.binding;
    l.descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
    l.descriptorCount = 1;
    l.stageFlags = VK_SHADER_STAGE_COMPUTE_BIT;
    dslb.push_back(l);
  }
  VkDescriptorSetLayoutCreateInfo dci{VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO};
  dci.bindingCount = uint32_t(dslb.size());
  dci.pBindings = dslb.data();
  vk_check(vkCreateDescriptorSetLayout(device_, &dci, nullptr, &k->set_layout_), "vkCreateDescriptorSetLayout");
  VkPushConstantRange pcr{VK_SHADER_STAGE_COMPUTE_BIT, 0, refl.push_bytes};
  VkPipelineLayoutCreateInfo plci{VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO};
  plci.setLayoutCount = 1;
  plci.pSetLayouts = &k->set_layout_;
  plci.pushConstantRangeCount = refl.push_bytes ? 1 : 0;
  plci.pPushConstantRanges = &pcr;
  vk_check(vkCreatePipelineLayout(device_, &plci, nullptr, &k->layout_), "vkCreatePipelineLayout");

  VkShaderModuleCreateInfo smci{VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO};
  smci.codeSize = blob->word_count * 4;
  smci.pCode = blob->words;
  VkShaderModule module;
  vk_check(vkCreateShaderModule(device_, &smci, nullptr, &module), "vkCreateShaderModule");

  std::vector<VkSpecializationMapEntry> entries;
  std::vector<uint32_t> values;
  for (uint32_t i = 0; i < 3; ++i)
    if (refl.local_is_spec[i]) entries.push_back({i, uint32_t(values.size() * 4), 4}), values.push_back(k->local_size_[i]);
  for (size_t i = 0; i < spec.size(); ++i)
    entries.push_back({refl.spec_ids[i], uint32_t(values.size() * 4), 4}), values.push_back(spec[i]);
  VkSpecializationInfo si{uint32_t(entries.size()), entries.data(), values.size() * 4, values.data()};

  VkComputePipelineCreateInfo cci{VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO};
  cci.flags = VK_PIPELINE_CREATE_DISPATCH_BASE_BIT;  // lets the recorder split huge dispatches
  cci.stage.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO;
  cci.stage.stage = VK_SHADER_STAGE_COMPUTE_BIT;
  cci.stage.module = module;
  cci.stage.pName = "main";
  cci.stage.pSpecializationInfo = entries.empty() ? nullptr : &si;
  // Kernels that hand values between lanes by index get the subgroup size they were
  // specialized for, and only full subgroups (otherwise a driver may pick another size).
  VkPipelineShaderStageRequiredSubgroupSizeCreateInfo sgsize{
      VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_REQUIRED_SUBGROUP_SIZE_CREATE_INFO};
  if (required_subgroup_size) {
    sgsize.requiredSubgroupSize = required_subgroup_size;
    cci.stage.pNext = &sgsize;
    cci.stage.flags |= VK_PIPELINE_SHADER_STAGE_CREATE_REQUIRE_FULL_SUBGROUPS_BIT;
  }
  cci.layout = k->layout_;
  VkResult r = vkCreateComputePipelines(device_, cache_, 1, &cci, nullptr, &k->pipeline_);
  vkDestroyShaderModule(device_, module, nullptr);
  vk_check(r, ("vkCreateComputePipelines(" + shader + ")").c_str());
  return *(kernels_[key] = std::move(k));
}

}  // namespace vkqat

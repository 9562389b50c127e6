#include "backend/context.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>

#include "backend/error.h"
#include "backend/kernel.h"

namespace vkqat {
namespace {

std::string version_str(uint32_t v) {
  return std::to_string(VK_API_VERSION_MAJOR(v)) + "." + std::to_string(VK_API_VERSION_MINOR(v)) + "." +
         std::to_string(VK_API_VERSION_PATCH(v));
}

const char* type_name(VkPhysicalDeviceType t) {
  switch (t) {
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: return "discrete";
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: return "integrated";
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: return "virtual";
    case VK_PHYSICAL_DEVICE_TYPE_CPU: return "cpu";
    default: return "other";
  }
}

std::set<std::string> device_extensions(VkPhysicalDevice pd) {
  uint32_t n = 0;
  vkEnumerateDeviceExtensionProperties(pd, nullptr, &n, nullptr);
  std::vector<VkExtensionProperties> props(n);
  vkEnumerateDeviceExtensionProperties(pd, nullptr, &n, props.data());
  std::set<std::string> out;
  for (auto& p : props) out.insert(p.extensionName);
  return out;
}

bool instance_has_layer(const char* name) {
  uint32_t n = 0;
  vkEnumerateInstanceLayerProperties(&n, nullptr);
  std::vector<VkLayerProperties> layers(n);
  vkEnumerateInstanceLayerProperties(&n, layers.data());
  for (auto& l : layers)
    if (!std::strcmp(l.layerName, name)) return true;
  return false;
}

bool instance_has_extension(const char* name) {
  uint32_t n = 0;
  vkEnumerateInstanceExtensionProperties(nullptr, &n, nullptr);
  std::vector<VkExtensionProperties> exts(n);
  vkEnumerateInstanceExtensionProperties(nullptr, &n, exts.data());
  for (auto& e : exts)
    if (!std::strcmp(e.extensionName, name)) return true;
  return false;
}

// Finds a queue family with compute; prefers one without graphics (async compute queues).
int compute_queue_family(VkPhysicalDevice pd, uint32_t* timestamp_bits, bool graphics = false) {
  uint32_t n = 0;
  vkGetPhysicalDeviceQueueFamilyProperties(pd, &n, nullptr);
  std::vector<VkQueueFamilyProperties> q(n);
  vkGetPhysicalDeviceQueueFamilyProperties(pd, &n, q.data());
  int best = -1;
  for (uint32_t i = 0; i < n; ++i) {
    if (!(q[i].queueFlags & VK_QUEUE_COMPUTE_BIT)) continue;
    if (graphics && !(q[i].queueFlags & VK_QUEUE_GRAPHICS_BIT)) continue;
    if (best < 0 || ((q[best].queueFlags & VK_QUEUE_GRAPHICS_BIT) && !(q[i].queueFlags & VK_QUEUE_GRAPHICS_BIT)))
      best = int(i);
  }
  if (best >= 0 && timestamp_bits) *timestamp_bits = q[best].timestampValidBits;
  return best;
}

DeviceInfo gather_info(VkPhysicalDevice pd, int index) {
  DeviceInfo d;
  d.index = index;
  auto exts = device_extensions(pd);
  VkPhysicalDeviceProperties base;
  vkGetPhysicalDeviceProperties(pd, &base);
  bool v12 = base.apiVersion >= VK_API_VERSION_1_2, v13 = base.apiVersion >= VK_API_VERSION_1_3;

  VkPhysicalDeviceProperties2 props{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2};
  VkPhysicalDeviceSubgroupProperties subgroup{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES};
  VkPhysicalDeviceSubgroupSizeControlProperties sgctl{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_PROPERTIES};
  VkPhysicalDeviceShaderIntegerDotProductProperties dotp{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_INTEGER_DOT_PRODUCT_PROPERTIES};
  VkPhysicalDeviceDriverProperties driver{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_DRIVER_PROPERTIES};
  props.pNext = &subgroup;
  void** tail = &subgroup.pNext;
  bool has_sgctl = v13 || exts.count("VK_EXT_subgroup_size_control");
  bool has_dot = v13 || exts.count("VK_KHR_shader_integer_dot_product");
  bool has_driver = v12 || exts.count("VK_KHR_driver_properties");
  if (has_sgctl) *tail = &sgctl, tail = &sgctl.pNext;
  if (has_dot) *tail = &dotp, tail = &dotp.pNext;
  if (has_driver) *tail = &driver, tail = &driver.pNext;
  vkGetPhysicalDeviceProperties2(pd, &props);

  VkPhysicalDeviceFeatures2 feats{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2};
  VkPhysicalDeviceShaderFloat16Int8Features f16i8{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_FLOAT16_INT8_FEATURES};
  VkPhysicalDevice16BitStorageFeatures s16{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES};
  VkPhysicalDevice8BitStorageFeatures s8{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_8BIT_STORAGE_FEATURES};
  VkPhysicalDeviceShaderIntegerDotProductFeatures dotf{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_INTEGER_DOT_PRODUCT_FEATURES};
  VkPhysicalDeviceSubgroupSizeControlFeatures sgctlf{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_FEATURES};
  feats.pNext = &s16;
  tail = &s16.pNext;
  bool has_f16i8 = v12 || exts.count("VK_KHR_shader_float16_int8");
  bool has_s8 = v12 || exts.count("VK_KHR_8bit_storage");
  if (has_f16i8) *tail = &f16i8, tail = &f16i8.pNext;
  if (has_s8) *tail = &s8, tail = &s8.pNext;
  if (has_dot) *tail = &dotf, tail = &dotf.pNext;
  if (has_sgctl) *tail = &sgctlf, tail = &sgctlf.pNext;
  vkGetPhysicalDeviceFeatures2(pd, &feats);

  const VkPhysicalDeviceLimits& lim = props.properties.limits;
  d.name = props.properties.deviceName;
  d.type = type_name(props.properties.deviceType);
  d.api_version = props.properties.apiVersion;
  d.vendor_id = props.properties.vendorID;
  d.device_id = props.properties.deviceID;
  std::memcpy(d.pipeline_cache_uuid.data(), props.properties.pipelineCacheUUID, VK_UUID_SIZE);
  if (has_driver) {
    d.driver_name = driver.driverName;
    d.driver_info = driver.driverInfo;
  }
  d.subgroup_size = subgroup.subgroupSize;
  d.min_subgroup_size = has_sgctl ? sgctl.minSubgroupSize : subgroup.subgroupSize;
  d.max_subgroup_size = has_sgctl ? sgctl.maxSubgroupSize : subgroup.subgroupSize;
  d.subgroup_size_control = has_sgctl && sgctlf.subgroupSizeControl && sgctlf.computeFullSubgroups &&
                            (sgctl.requiredSubgroupSizeStages & VK_SHADER_STAGE_COMPUTE_BIT);
  const bool compute_subgroups = (subgroup.supportedStages & VK_SHADER_STAGE_COMPUTE_BIT) != 0;
  d.subgroup_shuffle = compute_subgroups && (subgroup.supportedOperations & VK_SUBGROUP_FEATURE_SHUFFLE_BIT);
  d.subgroup_arithmetic = compute_subgroups && (subgroup.supportedOperations & VK_SUBGROUP_FEATURE_ARITHMETIC_BIT);
  d.shader_float16 = has_f16i8 && f16i8.shaderFloat16;
  d.shader_int8 = has_f16i8 && f16i8.shaderInt8;
  d.shader_int16 = feats.features.shaderInt16;
  d.shader_int64 = feats.features.shaderInt64;
  d.storage_buffer_16bit = s16.storageBuffer16BitAccess;
  d.storage_buffer_8bit = has_s8 && s8.storageBuffer8BitAccess;
  d.integer_dot_product = has_dot && dotf.shaderIntegerDotProduct;
  d.integer_dot_4x8_packed_accelerated = d.integer_dot_product && dotp.integerDotProduct4x8BitPackedSignedAccelerated;
  d.integer_dot_4x8_packed_unsigned_accelerated =
      d.integer_dot_product && dotp.integerDotProduct4x8BitPackedUnsignedAccelerated;
  d.cooperative_matrix = exts.count("VK_KHR_cooperative_matrix") > 0;
  d.push_descriptor = exts.count("VK_KHR_push_descriptor") > 0;
  d.portability_subset = exts.count("VK_KHR_portability_subset") > 0;
  for (int i = 0; i < 3; ++i) {
    d.max_workgroup_size[i] = lim.maxComputeWorkGroupSize[i];
    d.max_workgroup_count[i] = lim.maxComputeWorkGroupCount[i];
  }
  d.max_workgroup_invocations = lim.maxComputeWorkGroupInvocations;
  d.max_shared_memory = lim.maxComputeSharedMemorySize;
  d.max_push_constants = lim.maxPushConstantsSize;
  d.max_storage_buffers_per_stage = lim.maxPerStageDescriptorStorageBuffers;
  d.max_storage_buffer_range = lim.maxStorageBufferRange;
  d.min_storage_offset_alignment = lim.minStorageBufferOffsetAlignment;
  d.max_allocation = 1ull << 30;  // Vulkan 1.1 guarantees at least 1 GiB
  {
    VkPhysicalDeviceMaintenance3Properties m3{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_3_PROPERTIES};
    VkPhysicalDeviceProperties2 p2{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2};
    p2.pNext = &m3;
    vkGetPhysicalDeviceProperties2(pd, &p2);
    d.max_allocation = m3.maxMemoryAllocationSize;
  }
  VkPhysicalDeviceMemoryProperties mem;
  vkGetPhysicalDeviceMemoryProperties(pd, &mem);
  for (uint32_t i = 0; i < mem.memoryHeapCount; ++i)
    if (mem.memoryHeaps[i].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT) d.device_local_bytes += mem.memoryHeaps[i].size;
  uint32_t ts_bits = 0;
  compute_queue_family(pd, &ts_bits);
  d.timestamps = ts_bits > 0 && lim.timestampComputeAndGraphics;
  d.timestamp_period_ns = lim.timestampPeriod;
  apply_device_profile(d, device_profile_from_env());
  return d;
}

struct InstanceSetup {
  VkInstance instance = VK_NULL_HANDLE;
  VkDebugUtilsMessengerEXT messenger = VK_NULL_HANDLE;
};

VKAPI_ATTR VkBool32 VKAPI_CALL debug_callback(VkDebugUtilsMessageSeverityFlagBitsEXT,
                                              VkDebugUtilsMessageTypeFlagsEXT,
                                              const VkDebugUtilsMessengerCallbackDataEXT* data, void* user) {
  static_cast<Context*>(user)->report_validation_message(data->pMessage ? data->pMessage : "(no text)");
  return VK_FALSE;
}

const char* kNoDriver =
    "no Vulkan driver found: install one (for a CPU without GPU: `apt-get install mesa-vulkan-drivers`, "
    "which provides lavapipe), or check VK_ICD_FILENAMES / VK_DRIVER_FILES";

VkInstance create_instance(bool validation, Context* ctx, VkDebugUtilsMessengerEXT* messenger,
                           const std::vector<std::string>& extra_extensions = {}) {
  uint32_t loader_version = VK_API_VERSION_1_0;
  auto enum_version = reinterpret_cast<PFN_vkEnumerateInstanceVersion>(
      vkGetInstanceProcAddr(nullptr, "vkEnumerateInstanceVersion"));
  if (enum_version) enum_version(&loader_version);
  if (loader_version < VK_API_VERSION_1_1)
    throw Error("the Vulkan loader is version " + version_str(loader_version) + "; vkqat needs Vulkan 1.1");

  VkApplicationInfo app{VK_STRUCTURE_TYPE_APPLICATION_INFO};
  app.pApplicationName = "vkqat";
  app.pEngineName = "vkqat";
  app.apiVersion = std::min<uint32_t>(loader_version, VK_API_VERSION_1_3);

  std::vector<const char*> layers, extensions;
  VkInstanceCreateInfo ici{VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO};
  if (instance_has_extension("VK_KHR_portability_enumeration")) {
    extensions.push_back("VK_KHR_portability_enumeration");
    ici.flags |= VK_INSTANCE_CREATE_ENUMERATE_PORTABILITY_BIT_KHR;
  }
  VkValidationFeatureEnableEXT enables[] = {VK_VALIDATION_FEATURE_ENABLE_SYNCHRONIZATION_VALIDATION_EXT};
  VkValidationFeaturesEXT vfeat{VK_STRUCTURE_TYPE_VALIDATION_FEATURES_EXT};
  VkDebugUtilsMessengerCreateInfoEXT dci{VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT};
  if (validation) {
    if (!instance_has_layer("VK_LAYER_KHRONOS_validation"))
      throw Error("validation requested but VK_LAYER_KHRONOS_validation is not installed "
                  "(`apt-get install vulkan-validationlayers`)");
    layers.push_back("VK_LAYER_KHRONOS_validation");
    extensions.push_back(VK_EXT_DEBUG_UTILS_EXTENSION_NAME);
    vfeat.enabledValidationFeatureCount = 1;
    vfeat.pEnabledValidationFeatures = enables;
    dci.messageSeverity =
        VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT;
    dci.messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT |
                      VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT;
    dci.pfnUserCallback = debug_callback;
    dci.pUserData = ctx;
    vfeat.pNext = &dci;  // also report messages from vkCreateInstance itself
    ici.pNext = &vfeat;
  }
  for (const std::string& e : extra_extensions) {
    if (!instance_has_extension(e.c_str())) throw Error("the Vulkan instance lacks extension " + e);
    extensions.push_back(e.c_str());
  }
  ici.pApplicationInfo = &app;
  ici.enabledLayerCount = uint32_t(layers.size());
  ici.ppEnabledLayerNames = layers.data();
  ici.enabledExtensionCount = uint32_t(extensions.size());
  ici.ppEnabledExtensionNames = extensions.data();
  VkInstance instance = VK_NULL_HANDLE;
  VkResult r = vkCreateInstance(&ici, nullptr, &instance);
  if (r == VK_ERROR_INCOMPATIBLE_DRIVER) throw Error(kNoDriver);
  vk_check(r, "vkCreateInstance");
  if (validation && messenger) {
    auto create = reinterpret_cast<PFN_vkCreateDebugUtilsMessengerEXT>(
        vkGetInstanceProcAddr(instance, "vkCreateDebugUtilsMessengerEXT"));
    vk_check(create(instance, &dci, nullptr, messenger), "vkCreateDebugUtilsMessengerEXT");
  }
  return instance;
}

std::vector<VkPhysicalDevice> physical_devices(VkInstance instance) {
  uint32_t n = 0;
  VkResult r = vkEnumeratePhysicalDevices(instance, &n, nullptr);
  if (r == VK_ERROR_INITIALIZATION_FAILED || n == 0) throw Error(kNoDriver);
  std::vector<VkPhysicalDevice> pds(n);
  vk_check(vkEnumeratePhysicalDevices(instance, &n, pds.data()), "vkEnumeratePhysicalDevices");
  pds.resize(n);
  return pds;
}

}  // namespace

std::string DeviceInfo::profile_note() const {
  return profile.empty() ? "" : " (VKQAT_DEVICE_PROFILE=" + profile + ")";
}

std::string device_profile_from_env() {
  const char* e = std::getenv("VKQAT_DEVICE_PROFILE");
  if (!e || !*e || !std::strcmp(e, "none")) return "";
  if (std::strcmp(e, "mobile") && std::strcmp(e, "vulkan-min"))
    throw Error(std::string("VKQAT_DEVICE_PROFILE=") + e + ": expected mobile, vulkan-min or none");
  return e;
}

void apply_device_profile(DeviceInfo& d, const std::string& profile) {
  if (profile.empty() || profile == "none") return;
  if (profile != "mobile" && profile != "vulkan-min")
    throw Error("device profile '" + profile + "': expected mobile, vulkan-min or none");
  auto clamp32 = [](uint32_t& v, uint32_t limit) { v = std::min(v, limit); };
  auto clamp64 = [](uint64_t& v, uint64_t limit) { v = std::min(v, limit); };
  // Shared by both: the Vulkan 1.1 minimums that Android's baseline profile keeps too.
  clamp32(d.max_workgroup_invocations, 128);
  clamp32(d.max_workgroup_size[0], 128);
  clamp32(d.max_workgroup_size[1], 128);
  clamp32(d.max_workgroup_size[2], 64);
  clamp32(d.max_shared_memory, 16384);
  clamp64(d.max_storage_buffer_range, uint64_t(1) << 27);
  d.subgroup_size_control = false;
  d.min_subgroup_size = d.max_subgroup_size = d.subgroup_size;
  d.shader_int64 = d.shader_int16 = d.shader_int8 = d.shader_float16 = false;
  d.storage_buffer_16bit = d.storage_buffer_8bit = false;
  d.cooperative_matrix = false;
  if (profile == "mobile") {
    clamp32(d.max_storage_buffers_per_stage, 12);
  } else {
    clamp32(d.max_storage_buffers_per_stage, 4);
    clamp32(d.max_push_constants, 128);
    for (uint32_t& c : d.max_workgroup_count) clamp32(c, 65535);
    d.min_storage_offset_alignment = std::max<uint64_t>(d.min_storage_offset_alignment, 256);
    d.subgroup_shuffle = d.subgroup_arithmetic = false;
    d.integer_dot_product = d.integer_dot_4x8_packed_accelerated = false;
    d.integer_dot_4x8_packed_unsigned_accelerated = false;
    d.push_descriptor = false;
  }
  d.profile = profile;
}

std::vector<DeviceInfo> enumerate_devices() {
  VkInstance instance = create_instance(false, nullptr, nullptr);
  std::vector<DeviceInfo> out;
  try {
    auto pds = physical_devices(instance);
    for (size_t i = 0; i < pds.size(); ++i) out.push_back(gather_info(pds[i], int(i)));
  } catch (...) {
    vkDestroyInstance(instance, nullptr);
    throw;
  }
  vkDestroyInstance(instance, nullptr);
  return out;
}

int select_device(const std::vector<DeviceInfo>& devices, int requested) {
  std::string source = "--device";
  if (requested < 0) {
    if (const char* env = std::getenv("VKQAT_DEVICE"); env && *env) {
      char* end = nullptr;
      long v = std::strtol(env, &end, 10);
      if (*end || v < 0) throw Error(std::string("VKQAT_DEVICE=") + env + ": expected a device index (see `vkqat devices`)");
      requested = int(v);
      source = "VKQAT_DEVICE";
    }
  }
  if (requested >= 0) {
    if (requested >= int(devices.size())) {
      std::string list;
      for (auto& d : devices) list += "\n  " + std::to_string(d.index) + ": " + d.name + " (" + d.type + ")";
      throw Error(source + " " + std::to_string(requested) + ": out of range, " + std::to_string(devices.size()) +
                  " Vulkan device(s) found:" + list);
    }
    if (devices[requested].api_version < VK_API_VERSION_1_1)
      throw Error(source + " " + std::to_string(requested) + ": " + devices[requested].name + " supports only Vulkan " +
                  version_str(devices[requested].api_version) + "; vkqat needs 1.1");
    return requested;
  }
  auto rank = [](const DeviceInfo& d) {
    if (d.type == "discrete") return 0;
    if (d.type == "integrated") return 1;
    if (d.type == "virtual") return 2;
    if (d.type == "cpu") return 3;
    return 4;
  };
  int best = -1;
  for (const DeviceInfo& d : devices) {
    if (d.api_version < VK_API_VERSION_1_1) continue;
    if (best < 0 || rank(d) < rank(devices[best])) best = d.index;
  }
  if (best < 0) throw Error("no Vulkan 1.1 device found; vkqat needs Vulkan 1.1");
  return best;
}

Context::Context(const ContextOptions& options) : options_(options) {
  try {
    instance_ = create_instance(options.validation, this, &messenger_, options.instance_extensions);
    auto pds = physical_devices(instance_);
    std::vector<DeviceInfo> infos;
    for (size_t i = 0; i < pds.size(); ++i) infos.push_back(gather_info(pds[i], int(i)));
    int index = select_device(infos, options.device);
    physical_ = pds[index];
    info_ = infos[index];

    uint32_t ts_bits = 0;
    int family = compute_queue_family(physical_, &ts_bits, options.graphics);
    if (family < 0)
      throw Error("Vulkan device " + info_.name + " has no " + (options.graphics ? "graphics+compute" : "compute") + " queue");
    queue_family_ = uint32_t(family);
    float priority = 1.0f;
    VkDeviceQueueCreateInfo qci{VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO};
    qci.queueFamilyIndex = queue_family_;
    qci.queueCount = 1;
    qci.pQueuePriorities = &priority;
    VkDeviceCreateInfo dci{VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO};
    dci.queueCreateInfoCount = 1;
    dci.pQueueCreateInfos = &qci;
    std::vector<const char*> device_exts;
    const auto available = device_extensions(physical_);
    for (const std::string& e : options.device_extensions) {
      if (!available.count(e)) throw Error("Vulkan device " + info_.name + " lacks extension " + e);
      device_exts.push_back(e.c_str());
    }
    // shaderIntegerDotProduct, so that int_conv_dot.comp (OpUDot) may run: core in Vulkan 1.3
    // (device and instance), else through VK_KHR_shader_integer_dot_product.
    VkPhysicalDeviceShaderIntegerDotProductFeatures dot_features{
        VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_INTEGER_DOT_PRODUCT_FEATURES};
    if (info_.integer_dot_product) {
      uint32_t instance_version = VK_API_VERSION_1_0;
      vkEnumerateInstanceVersion(&instance_version);
      const bool core = std::min(instance_version, info_.api_version) >= VK_API_VERSION_1_3;
      const std::string dot_ext = VK_KHR_SHADER_INTEGER_DOT_PRODUCT_EXTENSION_NAME;
      const bool listed = available.count(dot_ext) > 0;
      if (core || listed) {
        const bool requested = std::find(options.device_extensions.begin(), options.device_extensions.end(), dot_ext) !=
                               options.device_extensions.end();
        if (!core && !requested) device_exts.push_back(VK_KHR_SHADER_INTEGER_DOT_PRODUCT_EXTENSION_NAME);
        dot_features.shaderIntegerDotProduct = VK_TRUE;
        dci.pNext = &dot_features;
        info_.integer_dot_product_enabled = true;
      }
    }
    // Subgroup size control and full subgroups, for the kernels that request a subgroup
    // size (Context::kernel): core in 1.3, else VK_EXT_subgroup_size_control.
    VkPhysicalDeviceSubgroupSizeControlFeatures sgctl_features{
        VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_FEATURES};
    if (info_.subgroup_size_control) {
      uint32_t instance_version = VK_API_VERSION_1_0;
      vkEnumerateInstanceVersion(&instance_version);
      const bool core = std::min(instance_version, info_.api_version) >= VK_API_VERSION_1_3;
      if (core || available.count(VK_EXT_SUBGROUP_SIZE_CONTROL_EXTENSION_NAME)) {
        if (!core) device_exts.push_back(VK_EXT_SUBGROUP_SIZE_CONTROL_EXTENSION_NAME);
        sgctl_features.subgroupSizeControl = VK_TRUE;
        sgctl_features.computeFullSubgroups = VK_TRUE;
        sgctl_features.pNext = const_cast<void*>(dci.pNext);
        dci.pNext = &sgctl_features;
      } else {
        info_.subgroup_size_control = false;
      }
    }
    // A portability implementation (MoltenVK) must have the subset extension enabled.
    if (info_.portability_subset &&
        std::find(options.device_extensions.begin(), options.device_extensions.end(), "VK_KHR_portability_subset") ==
            options.device_extensions.end())
      device_exts.push_back("VK_KHR_portability_subset");
    dci.enabledExtensionCount = uint32_t(device_exts.size());
    dci.ppEnabledExtensionNames = device_exts.data();
    vk_check(vkCreateDevice(physical_, &dci, nullptr, &device_), "vkCreateDevice");
    vkGetDeviceQueue(device_, queue_family_, 0, &queue_);

    VkCommandPoolCreateInfo cpi{VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO};
    cpi.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT;
    cpi.queueFamilyIndex = queue_family_;
    vk_check(vkCreateCommandPool(device_, &cpi, nullptr, &command_pool_), "vkCreateCommandPool");
    VkFenceCreateInfo fci{VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    vk_check(vkCreateFence(device_, &fci, nullptr, &fence_), "vkCreateFence");

    allocator_ = std::make_unique<BlockAllocator>(device_, physical_, info_.min_storage_offset_alignment,
                                                  info_.max_allocation);
    staging_ = std::make_unique<StagingRing>(*allocator_, 16ull << 20);
    kernels_ = std::make_unique<KernelCache>(device_, info_, options.pipeline_cache);
  } catch (...) {
    release();  // members are destroyed by the language; Vulkan handles are not
    throw;
  }
}

Context::~Context() { release(); }

void Context::release() {
  if (device_) vkDeviceWaitIdle(device_);
  if (kernels_) {
    try {
      kernels_->save();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "vkqat: warning: %s\n", e.what());
    }
  }
  kernels_.reset();
  staging_.reset();
  allocator_.reset();
  if (fence_) vkDestroyFence(device_, fence_, nullptr), fence_ = VK_NULL_HANDLE;
  if (command_pool_) vkDestroyCommandPool(device_, command_pool_, nullptr), command_pool_ = VK_NULL_HANDLE;
  if (device_) vkDestroyDevice(device_, nullptr), device_ = VK_NULL_HANDLE;
  if (messenger_) {
    auto destroy = reinterpret_cast<PFN_vkDestroyDebugUtilsMessengerEXT>(
        vkGetInstanceProcAddr(instance_, "vkDestroyDebugUtilsMessengerEXT"));
    destroy(instance_, messenger_, nullptr);
    messenger_ = VK_NULL_HANDLE;
  }
  if (instance_) vkDestroyInstance(instance_, nullptr), instance_ = VK_NULL_HANDLE;
}

void Context::report_validation_message(const std::string& msg) {
  ++validation_messages_;
  if (options_.on_validation_message)
    options_.on_validation_message(msg);
  else
    std::fprintf(stderr, "vkqat: Vulkan validation: %s\n", msg.c_str());
}

Buffer Context::alloc(uint64_t bytes, MemoryKind kind) { return allocator_->alloc(bytes, kind); }

const Kernel& Context::kernel(const std::string& shader, std::array<uint32_t, 3> local_size,
                              const std::vector<uint32_t>& spec, uint32_t subgroup_size) {
  return kernels_->get(shader, local_size, spec, subgroup_size);
}

void Context::submit(VkCommandBuffer cmd, VkFence fence) {
  VkSubmitInfo si{VK_STRUCTURE_TYPE_SUBMIT_INFO};
  si.commandBufferCount = 1;
  si.pCommandBuffers = &cmd;
  std::lock_guard<std::mutex> lock(queue_mutex_);
  vk_check(vkQueueSubmit(queue_, 1, &si, fence), "vkQueueSubmit");
}

void Context::submit_and_wait(VkCommandBuffer cmd) {
  submit(cmd, fence_);
  VkResult r = vkWaitForFences(device_, 1, &fence_, VK_TRUE, UINT64_MAX);
  vkResetFences(device_, 1, &fence_);
  vk_check(r, "vkWaitForFences");
}

// One-shot copy between a buffer and the staging ring, in chunks of the ring's size.
static void staged_copy(Context& ctx, const Buffer& staging, const BufferView& dev, uint8_t* host, uint64_t bytes,
                        bool to_device) {
  VkCommandBufferAllocateInfo ai{VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
  ai.commandPool = ctx.command_pool();
  ai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
  ai.commandBufferCount = 1;
  VkCommandBuffer cmd;
  vk_check(vkAllocateCommandBuffers(ctx.device(), &ai, &cmd), "vkAllocateCommandBuffers");
  uint8_t* ring = static_cast<uint8_t*>(staging.mapped());
  for (uint64_t done = 0; done < bytes;) {
    uint64_t n = std::min(bytes - done, staging.size());
    if (to_device) std::memcpy(ring, host + done, n);
    VkCommandBufferBeginInfo bi{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
    bi.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
    vkBeginCommandBuffer(cmd, &bi);
    VkBufferCopy region{};
    region.size = n;
    if (to_device) {
      region.srcOffset = staging.view().offset;
      region.dstOffset = dev.offset + done;
      vkCmdCopyBuffer(cmd, staging.view().buffer, dev.buffer, 1, &region);
    } else {
      region.srcOffset = dev.offset + done;
      region.dstOffset = staging.view().offset;
      vkCmdCopyBuffer(cmd, dev.buffer, staging.view().buffer, 1, &region);
      VkMemoryBarrier mb{VK_STRUCTURE_TYPE_MEMORY_BARRIER};
      mb.srcAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT;
      mb.dstAccessMask = VK_ACCESS_HOST_READ_BIT;
      vkCmdPipelineBarrier(cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_PIPELINE_STAGE_HOST_BIT, 0, 1, &mb, 0, nullptr,
                           0, nullptr);
    }
    vkEndCommandBuffer(cmd);
    ctx.submit_and_wait(cmd);
    if (!to_device) std::memcpy(host + done, ring, n);
    done += n;
  }
  vkFreeCommandBuffers(ctx.device(), ctx.command_pool(), 1, &cmd);
}

void Context::upload(const BufferView& dst, const void* src, uint64_t bytes) {
  if (bytes > dst.size) throw Error("upload of " + std::to_string(bytes) + " bytes into a " + std::to_string(dst.size) + "-byte buffer");
  if (dst.mapped) {
    std::memcpy(dst.mapped, src, bytes);  // host-coherent or UMA memory: no copy command needed
    return;
  }
  staged_copy(*this, staging_->buffer(), dst, static_cast<uint8_t*>(const_cast<void*>(src)), bytes, true);
}

void Context::download(const BufferView& src, void* dst, uint64_t bytes) {
  if (bytes > src.size) throw Error("download of " + std::to_string(bytes) + " bytes from a " + std::to_string(src.size) + "-byte buffer");
  if (src.mapped) {
    std::memcpy(dst, src.mapped, bytes);
    return;
  }
  staged_copy(*this, staging_->buffer(), src, static_cast<uint8_t*>(dst), bytes, false);
}

}  // namespace vkqat

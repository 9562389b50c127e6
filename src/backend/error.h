#pragma once
// One exception type for every user-facing failure. Messages name the file, flag or
// shape that is wrong; the CLI prints them and exits non-zero.
#include <stdexcept>
#include <string>

namespace vkqat {

struct Error : std::runtime_error {
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// Throws Error("<what>: <VkResult name>") when r is not VK_SUCCESS.
void vk_check(int vk_result, const char* what);
const char* vk_result_name(int vk_result);

}  // namespace vkqat

/* Preloaded by `make test-asan`: keeps the Vulkan driver and validation layer mapped after the
   Vulkan loader dlclose()s them, so that LeakSanitizer can name their module at exit and
   tests/lsan.supp can suppress their leaks (an unloaded module's frames are anonymous).
   RTLD_LOCAL: nothing of theirs interposes on the loader's symbols. */
#define _GNU_SOURCE
#include <dlfcn.h>

__attribute__((constructor)) static void keep_vulkan_modules_loaded(void) {
  static const char* const libs[] = {"libvulkan_lvp.so", "libVkLayer_khronos_validation.so", "libvulkan.so.1"};
  for (unsigned i = 0; i < sizeof libs / sizeof libs[0]; ++i) dlopen(libs[i], RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
}

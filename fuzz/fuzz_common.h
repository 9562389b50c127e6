#pragma once
// Shared by the libFuzzer harnesses: the readers take paths, so each input is written to a
// per-process scratch file (on /dev/shm when there is one). A vkqat::Error is the expected
// answer to bad input; anything else escaping (a JSON exception, std::bad_alloc,
// std::out_of_range) aborts the process, and libFuzzer reports it as a finding.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "backend/error.h"

namespace vkqat::fuzz {

inline std::string scratch_path(const std::string& name) {
  const char* dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
  return std::string(dir) + "/vkqat-fuzz-" + std::to_string(getpid()) + "-" + name;
}

inline std::string write_scratch(const std::string& name, const uint8_t* data, size_t size) {
  const std::string path = scratch_path(name);
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) __builtin_trap();
  if (size && std::fwrite(data, 1, size, f) != size) __builtin_trap();
  std::fclose(f);
  return path;
}

}  // namespace vkqat::fuzz

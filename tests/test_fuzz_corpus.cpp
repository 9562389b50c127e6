// Replays the committed fuzzing corpus (fuzz/corpus/NAME/*: seeds and the inputs that once
// crashed a harness) through the same harness code in the normal build: every input must
// end in a vkqat::Error or success, never another exception. This keeps what `make fuzz`
// found fixed without clang or libFuzzer.
#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <vector>

// Each harness defines LLVMFuzzerTestOneInput; renamed here so all of them link together.
#define LLVMFuzzerTestOneInput fuzz_idx_one
#include "../fuzz/fuzz_idx.cpp"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_cifar_one
#include "../fuzz/fuzz_cifar.cpp"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_safetensors_one
#include "../fuzz/fuzz_safetensors.cpp"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_bits_config_one
#include "../fuzz/fuzz_bits_config.cpp"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_model_config_one
#include "../fuzz/fuzz_model_config.cpp"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_model_desc_one
#include "../fuzz/fuzz_model_desc.cpp"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_int_model_one
#include "../fuzz/fuzz_int_model.cpp"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_stats_one
#include "../fuzz/fuzz_stats.cpp"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_image_one
#include "../fuzz/fuzz_image.cpp"
#undef LLVMFuzzerTestOneInput

namespace fs = std::filesystem;

TEST_CASE("the fuzzing corpus (seeds and past findings) replays without a crash or a non-vkqat error") {
  const char* data = std::getenv("VKQAT_TEST_DATA");  // SOURCE/tests/data, set by ctest
  REQUIRE_MESSAGE(data, "VKQAT_TEST_DATA is not set (run through ctest)");
  // tests/data need not exist: resolved lexically.
  const fs::path corpus = (fs::path(data) / ".." / ".." / "fuzz" / "corpus").lexically_normal();
  using Harness = int (*)(const uint8_t*, size_t);
  const std::vector<std::pair<const char*, Harness>> harnesses = {
      {"idx", fuzz_idx_one},           {"cifar", fuzz_cifar_one},         {"safetensors", fuzz_safetensors_one},
      {"bits_config", fuzz_bits_config_one}, {"model_config", fuzz_model_config_one},
      {"model_desc", fuzz_model_desc_one},
      {"int_model", fuzz_int_model_one}, {"stats", fuzz_stats_one},     {"image", fuzz_image_one}};
  int files = 0;
  for (const auto& [name, run] : harnesses) {
    const fs::path dir = corpus / name;
    REQUIRE_MESSAGE(fs::is_directory(dir), dir);
    const int before = files;
    for (const auto& e : fs::directory_iterator(dir)) {
      std::ifstream in(e.path(), std::ios::binary);
      const std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      CAPTURE(e.path());
      CHECK_NOTHROW(run(bytes.data(), bytes.size()));
      ++files;
    }
    CHECK_MESSAGE(files > before, dir << " holds no corpus file");
  }
  MESSAGE(files << " corpus files replayed");
  CHECK(files >= 15);
}

#pragma once
// Shared test helpers: the process-wide validated Context, seeded random data, and
// comparisons that print the worst offending index.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <unistd.h>

#include "backend/context.h"

namespace vkqat::test {

// One Context per test process, created with VK_LAYER_KHRONOS_validation and
// synchronization validation. Any validation message fails the running test case.
Context& ctx();

// The records of a JSON-lines file (metrics.jsonl), in order.
inline std::vector<nlohmann::json> read_jsonl(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::vector<nlohmann::json> out;
  for (std::string line; std::getline(in, line);) out.push_back(nlohmann::json::parse(line));
  return out;
}

// An empty path for a test's files under the temp directory, unique to this process
// ("vkqat-test-NAME-PID", removed first; not created).
inline std::filesystem::path fresh_dir(const std::string& name) {
  std::filesystem::path p = std::filesystem::temp_directory_path() / ("vkqat-test-" + name + "-" + std::to_string(::getpid()));
  std::filesystem::remove_all(p);
  return p;
}

// Sets an environment variable for one scope (restores the previous value).
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    setenv(name, value, 1);
  }
  ~ScopedEnv() { old_ ? setenv(name_, old_->c_str(), 1) : unsetenv(name_); }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

// True, after a MESSAGE saying so, when the device cannot run the integer dot-product
// kernels (the calling test then skips them).
inline bool lacks_integer_dot_product() {
  const DeviceInfo& d = ctx().info();
  if (d.integer_dot_product_enabled) return false;
  MESSAGE("skipped: " << d.name << " has no shaderIntegerDotProduct");
  return true;
}

inline std::vector<float> random_vector(size_t n, uint32_t seed, float lo = -1.f, float hi = 1.f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

// |got - want| <= atol + rtol * |want| elementwise; reports the worst element.
inline void check_close(const std::vector<float>& got, const std::vector<float>& want, double rtol,
                        double atol, const std::string& what) {
  REQUIRE_MESSAGE(got.size() == want.size(), what << ": size " << got.size() << " vs " << want.size());
  size_t worst = 0;
  double worst_excess = -1;
  size_t bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    double err = std::fabs(double(got[i]) - double(want[i]));
    double tol = atol + rtol * std::fabs(double(want[i]));
    if (!(err <= tol)) ++bad;  // also catches NaN
    double excess = std::isnan(err) ? 1e30 : err - tol;
    if (excess > worst_excess) worst_excess = excess, worst = i;
  }
  CHECK_MESSAGE(bad == 0, what << ": " << bad << " of " << got.size() << " elements off; worst ["
                               << worst << "] got " << got[worst] << " want " << want[worst]
                               << " (rtol " << rtol << ", atol " << atol << ")");
}

// Central finite difference of a scalar function f(x) w.r.t. x[i], in double precision.
inline double numeric_grad(const std::function<double(const std::vector<float>&)>& f,
                           std::vector<float> x, size_t i, double eps = 1e-3) {
  float orig = x[i];
  x[i] = float(orig + eps);
  double fp = f(x);
  x[i] = float(orig - eps);
  double fm = f(x);
  double h = double(float(orig + eps)) - double(float(orig - eps));
  return (fp - fm) / h;
}

}  // namespace vkqat::test

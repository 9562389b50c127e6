#pragma once
// Numbers from JSON files without undefined behaviour: nlohmann's implicit conversions turn a
// float such as 7e73 into an int with a plain static_cast (undefined; found by
// fuzz_model_config under UBSan), and wrap integers that do not fit. These throw Error.
#include <nlohmann/json.hpp>

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>

#include "backend/error.h"

namespace vkqat::nn {

template <class Int>
Int json_int(const nlohmann::json& v, const std::string& what) {
  static_assert(std::is_integral_v<Int>);
  if (!v.is_number_integer()) throw Error("'" + what + "' must be an integer, got " + v.dump());
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (u > uint64_t(std::numeric_limits<Int>::max())) throw Error("'" + what + "' is out of range: " + v.dump());
    return Int(u);
  }
  const int64_t s = v.get<int64_t>();
  if constexpr (std::is_unsigned_v<Int>) {
    if (s < 0) throw Error("'" + what + "' must not be negative, got " + v.dump());
  } else {
    if (s < int64_t(std::numeric_limits<Int>::min()) || s > int64_t(std::numeric_limits<Int>::max()))
      throw Error("'" + what + "' is out of range: " + v.dump());
  }
  return Int(s);
}

inline float json_float(const nlohmann::json& v, const std::string& what) {
  if (!v.is_number()) throw Error("'" + what + "' must be a number, got " + v.dump());
  const double d = v.get<double>();
  if (std::isfinite(d) && std::fabs(d) > double(FLT_MAX)) throw Error("'" + what + "' is out of range: " + v.dump());
  return float(d);
}

}  // namespace vkqat::nn

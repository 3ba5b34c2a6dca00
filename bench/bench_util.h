#pragma once
// Shared by the benchmarks: timing, memcpy baselines and the fields every result JSON carries.

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <string>
#include <vector>

#include "core/parallel.h"

namespace bindery::bench {

using Clock = std::chrono::steady_clock;

inline double seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

/// Best memcpy bandwidth over `repeat` copies of `bytes` between two touched buffers, on one
/// thread or split over all cores.
inline double memcpy_gbps(int64_t bytes, int repeat, bool threads) {
  std::vector<char> src(bytes, 1), dst(bytes, 0);
  double best = 0;
  for (int r = 0; r < repeat; ++r) {
    const auto t0 = Clock::now();
    if (threads)
      parallel_memcpy(dst.data(), src.data(), bytes);
    else
      std::memcpy(dst.data(), src.data(), bytes);
    best = std::max(best, static_cast<double>(bytes) / seconds(t0, Clock::now()) / 1e9);
  }
  return best;
}

inline std::string cpu_name() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return "unknown cpu";
}

inline std::string utc_now() {
  char date[32];
  const std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  return date;
}

/// BINDERY_COMMIT from the environment (the device machine has no .git).
inline std::string commit() {
  const char* c = std::getenv("BINDERY_COMMIT");
  return c ? c : "unknown";
}

}  // namespace bindery::bench

#pragma once
// Small text helpers shared by the CLI's commands.

#include <cstdint>
#include <cstdio>
#include <string>

namespace bindery::cli {

/// "812 B", "1.5 KiB", "3.2 MiB", "15.02 GiB".
inline std::string human_bytes(int64_t b) {
  char buf[32];
  if (b < 1024)
    std::snprintf(buf, sizeof buf, "%lld B", static_cast<long long>(b));
  else if (b < (1 << 20))
    std::snprintf(buf, sizeof buf, "%.1f KiB", b / 1024.0);
  else if (b < (1LL << 30))
    std::snprintf(buf, sizeof buf, "%.1f MiB", b / 1048576.0);
  else
    std::snprintf(buf, sizeof buf, "%.2f GiB", b / 1073741824.0);
  return buf;
}

}  // namespace bindery::cli

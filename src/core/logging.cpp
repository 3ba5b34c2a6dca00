#include "bindery/logging.h"

#include <atomic>
#include <cstdio>
#include <mutex>

namespace bindery {
namespace {
std::mutex g_mutex;
LogSink g_sink;
std::atomic<LogLevel> g_level{LogLevel::kWARNING};

const char* level_tag(LogLevel l) {
  switch (l) {
    case LogLevel::kVERBOSE: return "V";
    case LogLevel::kINFO: return "I";
    case LogLevel::kWARNING: return "W";
    case LogLevel::kERROR: return "E";
    default: return "?";
  }
}
}  // namespace

void set_log_sink(LogSink sink) {
  std::lock_guard lock(g_mutex);
  g_sink = std::move(sink);
}

void set_log_level(LogLevel level) { g_level = level; }
LogLevel log_level() { return g_level; }

void log(LogLevel level, std::string_view message) {
  if (level < g_level.load() || level == LogLevel::kOFF) return;
  std::lock_guard lock(g_mutex);
  if (g_sink) {
    g_sink(level, message);
  } else {
    std::fprintf(stderr, "bindery [%s] %.*s\n", level_tag(level), static_cast<int>(message.size()),
                 message.data());
  }
}

}  // namespace bindery

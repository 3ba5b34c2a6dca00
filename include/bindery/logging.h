#pragma once
// Library logging: levels and a user sink (TensorRT's ILogger, as a std::function).
// Thread-safe; the sink may be called from any thread the library uses.

#include <functional>
#include <string>
#include <string_view>

namespace bindery {

enum class LogLevel { kVERBOSE = 0, kINFO, kWARNING, kERROR, kOFF };

using LogSink = std::function<void(LogLevel, std::string_view)>;

/// Replaces the sink (default: stderr, "bindery [W] message"). Pass nullptr to restore it.
void set_log_sink(LogSink sink);
/// Messages below `level` are dropped before formatting reaches the sink. Default kWARNING.
void set_log_level(LogLevel level);
LogLevel log_level();
void log(LogLevel level, std::string_view message);

inline void log_verbose(std::string_view m) { log(LogLevel::kVERBOSE, m); }
inline void log_info(std::string_view m) { log(LogLevel::kINFO, m); }
inline void log_warning(std::string_view m) { log(LogLevel::kWARNING, m); }
inline void log_error(std::string_view m) { log(LogLevel::kERROR, m); }

}  // namespace bindery

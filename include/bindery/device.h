#pragma once
// Where memory lives and where an engine runs.

#include <string>

namespace bindery {

enum class DeviceType { kCPU, kCUDA };

struct Device {
  DeviceType type = DeviceType::kCPU;
  int index = 0;

  static Device cpu() { return {DeviceType::kCPU, 0}; }
  static Device cuda(int i = 0) { return {DeviceType::kCUDA, i}; }
  bool is_cpu() const { return type == DeviceType::kCPU; }
  bool operator==(const Device&) const = default;
  /// "cpu" or "cuda:0".
  std::string to_string() const;
};

}  // namespace bindery

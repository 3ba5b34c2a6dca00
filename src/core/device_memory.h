#pragma once
// Device memory as the host-side library sees it: is a GPU there, copy a device view to the
// host, and a small owning buffer (tests, staging). Built against the CUDA runtime when the
// toolkit is found at configure time (BINDERY_WITH_CUDA); otherwise every call reports that
// this build has no CUDA support. Nothing here needs a GPU to compile.

#include <cstddef>
#include <cstdint>
#include <string>

#include "bindery/weights.h"

namespace bindery {

/// True when this build has CUDA support and at least one GPU is visible. Never throws.
bool cuda_available();
/// Why cuda_available() is false ("this build has no CUDA support", "no CUDA device: ...").
std::string cuda_unavailable_reason();

/// Throws Error(kDEVICE) naming `what` unless the device view `w` is device memory of
/// `w.location` whose whole range [values, values + size_bytes()) lies inside one allocation,
/// so a copy from it cannot fault part-way.
void check_device_view(const Weights& w, const std::string& what);

/// Copies the bytes of a device view into host memory `dst` (size_bytes() bytes). Throws
/// Error(kDEVICE) naming `what` when the pointer is not device memory of `w.location`, or the
/// copy fails.
void copy_device_to_host(const Weights& w, void* dst, const std::string& what);

/// Bytes of `device`'s memory in use by every process (total - free), or -1 without CUDA.
int64_t device_memory_in_use(Device device);

/// Owned device memory (cudaMalloc). Move-only.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(Device device, size_t bytes);
  DeviceBuffer(DeviceBuffer&& o) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer();
  void* data() const { return data_; }
  size_t size() const { return size_; }
  void copy_from_host(const void* src, size_t bytes);

 private:
  Device device_;
  void* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace bindery

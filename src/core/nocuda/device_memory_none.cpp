// core/device_memory.h for builds without the CUDA toolkit: every device operation says so.

#include "bindery/error.h"
#include "core/device_memory.h"

namespace bindery {

namespace {
constexpr const char* kNoCuda =
    "this build of bindery has no CUDA support (the CUDA toolkit was not found at configure time)";
}

bool cuda_available() { return false; }
std::string cuda_unavailable_reason() { return kNoCuda; }

void check_device_view(const Weights&, const std::string& what) {
  throw Error(ErrorCode::kDEVICE, what + ": " + kNoCuda);
}

void copy_device_to_host(const Weights&, void*, const std::string& what) {
  throw Error(ErrorCode::kDEVICE, what + ": " + kNoCuda);
}

int64_t device_memory_in_use(Device) { return -1; }

DeviceBuffer::DeviceBuffer(Device, size_t) { throw Error(ErrorCode::kDEVICE, kNoCuda); }
DeviceBuffer::DeviceBuffer(DeviceBuffer&&) noexcept {}
DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&&) noexcept { return *this; }
DeviceBuffer::~DeviceBuffer() = default;
void DeviceBuffer::copy_from_host(const void*, size_t) { throw Error(ErrorCode::kDEVICE, kNoCuda); }

}  // namespace bindery

// CUDA runtime implementation of core/device_memory.h.

#include <cuda.h>
#include <cuda_runtime_api.h>

#include <cstdio>
#include <utility>

#include "bindery/error.h"
#include "core/device_memory.h"

namespace bindery {

namespace {
void cuda_check(cudaError_t e, const std::string& what) {
  if (e != cudaSuccess) throw Error(ErrorCode::kDEVICE, what + ": " + cudaGetErrorString(e));
}
}  // namespace

bool cuda_available() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

std::string cuda_unavailable_reason() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) return std::string("no CUDA device: ") + cudaGetErrorString(e);
  return n > 0 ? "" : "no CUDA device visible";
}

namespace {

// cuPointerGetAttribute from the driver, looked up at run time: linking libcuda would make every
// binary unloadable on machines without a driver (CI).
using PointerAttributeFn = CUresult (*)(void*, CUpointer_attribute, CUdeviceptr);
PointerAttributeFn pointer_attribute_fn() {
  static const PointerAttributeFn fn = [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult found{};
    if (cudaGetDriverEntryPointByVersion("cuPointerGetAttribute", &f, 12000, cudaEnableDefault,
                                         &found) != cudaSuccess ||
        found != cudaDriverEntryPointSuccess) {
      cudaGetLastError();
      return PointerAttributeFn{};
    }
    return reinterpret_cast<PointerAttributeFn>(f);
  }();
  return fn;
}

}  // namespace

void check_device_view(const Weights& w, const std::string& what) {
  cudaPointerAttributes attr{};
  const cudaError_t e = cudaPointerGetAttributes(&attr, w.values);
  if (e != cudaSuccess ||
      (attr.type != cudaMemoryTypeDevice && attr.type != cudaMemoryTypeManaged)) {
    cudaGetLastError();  // clear the sticky error of a failed query
    throw Error(ErrorCode::kDEVICE, what + ": the view says " + w.location.to_string() +
                                        " but its pointer is not device memory");
  }
  if (attr.device != w.location.index)
    throw Error(ErrorCode::kDEVICE,
                what + ": the view says " + w.location.to_string() +
                    " but its memory is on cuda:" + std::to_string(attr.device));
  const PointerAttributeFn range = pointer_attribute_fn();
  if (!range || w.size_bytes() == 0) return;
  CUdeviceptr start = 0;
  size_t size = 0;
  const auto ptr = reinterpret_cast<CUdeviceptr>(w.values);
  if (range(&start, CU_POINTER_ATTRIBUTE_RANGE_START_ADDR, ptr) != CUDA_SUCCESS ||
      range(&size, CU_POINTER_ATTRIBUTE_RANGE_SIZE, ptr) != CUDA_SUCCESS)
    return;  // memory the driver cannot size (e.g. managed, imported): the copy will tell
  const uint64_t end = static_cast<uint64_t>(ptr) + static_cast<uint64_t>(w.size_bytes());
  if (end > static_cast<uint64_t>(start) + size)
    throw Error(
        ErrorCode::kDEVICE, what + ": " + describe(w) + " runs " +
                                std::to_string(end - (static_cast<uint64_t>(start) + size)) +
                                " bytes past the end of its device allocation (" +
                                std::to_string(size) + " bytes at 0x" +
                                [&] {
                                  char buf[32];
                                  std::snprintf(buf, sizeof buf, "%llx",
                                                static_cast<unsigned long long>(start));
                                  return std::string(buf);
                                }() +
                                ")");
}

void copy_device_to_host(const Weights& w, void* dst, const std::string& what) {
  check_device_view(w, what);
  cuda_check(cudaMemcpy(dst, w.values, static_cast<size_t>(w.size_bytes()), cudaMemcpyDeviceToHost),
             what + ": device-to-host copy failed");
}

int64_t device_memory_in_use(Device device) {
  size_t free = 0, total = 0;
  if (cudaSetDevice(device.index) != cudaSuccess || cudaMemGetInfo(&free, &total) != cudaSuccess) {
    cudaGetLastError();
    return -1;
  }
  return static_cast<int64_t>(total - free);
}

DeviceBuffer::DeviceBuffer(Device device, size_t bytes) : device_(device), size_(bytes) {
  check(!device.is_cpu(), ErrorCode::kINVALID_ARGUMENT, "DeviceBuffer on the cpu");
  cuda_check(cudaSetDevice(device.index), "cudaSetDevice(" + std::to_string(device.index) + ")");
  cuda_check(cudaMalloc(&data_, bytes == 0 ? 1 : bytes),
             "cudaMalloc of " + std::to_string(bytes) + " bytes");
}

DeviceBuffer::DeviceBuffer(DeviceBuffer&& o) noexcept
    : device_(o.device_),
      data_(std::exchange(o.data_, nullptr)),
      size_(std::exchange(o.size_, 0)) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    if (data_) cudaFree(data_);
    device_ = o.device_;
    data_ = std::exchange(o.data_, nullptr);
    size_ = std::exchange(o.size_, 0);
  }
  return *this;
}

DeviceBuffer::~DeviceBuffer() {
  if (data_) cudaFree(data_);
}

void DeviceBuffer::copy_from_host(const void* src, size_t bytes) {
  check(bytes <= size_, ErrorCode::kINVALID_ARGUMENT,
        "copy of " + std::to_string(bytes) + " bytes into a " + std::to_string(size_) +
            "-byte device buffer");
  cuda_check(cudaMemcpy(data_, src, bytes, cudaMemcpyHostToDevice), "host-to-device copy");
}

}  // namespace bindery

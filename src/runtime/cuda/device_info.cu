// Cached device properties for grid sizing and launch options. cudaDeviceGetAttribute is cheap
// but not free, and the decode loop calls the wrappers thousands of times per second.

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "runtime/cuda/cuda_check.h"
#include "runtime/cuda/launch.cuh"

namespace bindery::cuda {
namespace {

constexpr int kMaxDevices = 64;

int current_device() {
  int device = 0;
  check_cuda(cudaGetDevice(&device), "cudaGetDevice");
  return device >= 0 && device < kMaxDevices ? device : 0;
}

// The attribute of the current device, read once (0 is never a valid value of those asked).
int cached_attribute(std::atomic<int> (&cache)[kMaxDevices], cudaDeviceAttr attribute,
                     const char* what) {
  const int device = current_device();
  int v = cache[device].load(std::memory_order_relaxed);
  if (v == 0) {
    check_cuda(cudaDeviceGetAttribute(&v, attribute, device), what);
    cache[device].store(v, std::memory_order_relaxed);
  }
  return v;
}

}  // namespace

int multiprocessor_count() {
  static std::atomic<int> cached[kMaxDevices] = {};
  return cached_attribute(cached, cudaDevAttrMultiProcessorCount,
                          "cudaDeviceGetAttribute(multiProcessorCount)");
}

bool programmatic_launch_enabled() {
  static const bool allowed = [] {
    const char* v = std::getenv("BINDERY_CUDA_PDL");
    return !(v && std::strcmp(v, "0") == 0);
  }();
  static std::atomic<int> major[kMaxDevices] = {};
  return allowed && cached_attribute(major, cudaDevAttrComputeCapabilityMajor,
                                     "cudaDeviceGetAttribute(computeCapabilityMajor)") >= 9;
}

}  // namespace bindery::cuda

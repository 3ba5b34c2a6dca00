// Cached device properties for grid sizing. cudaDeviceGetAttribute is cheap but not free, and
// the decode loop calls the wrappers thousands of times per second.

#include <atomic>

#include "runtime/cuda/cuda_check.h"

namespace bindery::cuda {

int multiprocessor_count() {
  constexpr int kMaxDevices = 64;
  static std::atomic<int> cached[kMaxDevices] = {};
  int device = 0;
  check_cuda(cudaGetDevice(&device), "cudaGetDevice");
  if (device < 0 || device >= kMaxDevices) device = 0;
  int n = cached[device].load(std::memory_order_relaxed);
  if (n == 0) {
    check_cuda(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device),
               "cudaDeviceGetAttribute(multiProcessorCount)");
    cached[device].store(n, std::memory_order_relaxed);
  }
  return n;
}

}  // namespace bindery::cuda

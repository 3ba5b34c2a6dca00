// The copy paths of a CUDA refit, alone: host-to-device from pageable memory through bindery's
// pinned staging ring (over worker counts and chunk sizes), from pinned memory, device to
// device, beside the CUDA runtime's own cudaMemcpy and the host's threaded memcpy. Needs a GPU.
//   bench_cuda_transfer [--gib N]        prints one JSON object (GB/s, best of 3)

#include <cuda_runtime_api.h>

#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>

#include "bench_util.h"
#include "bindery/error.h"
#include "bindery/weights.h"
#include "runtime/gpu/transfer.h"

using namespace bindery;
using bench::Clock;
using bench::seconds;

namespace {

void ok(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(e));
    std::exit(1);
  }
}

template <class Fn>
double best_gbps(int64_t bytes, Fn&& fn) {
  double best = 0;
  for (int r = 0; r < 3; ++r) {
    const auto t0 = Clock::now();
    fn();
    best = std::max(best, static_cast<double>(bytes) / seconds(t0, Clock::now()) / 1e9);
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  int64_t gib = 4;
  for (int i = 1; i + 1 < argc; ++i)
    if (std::string(argv[i]) == "--gib") gib = std::atoll(argv[++i]);
  const int64_t bytes = gib << 30;
  HostTensor pageable(DataType::kUINT8, {bytes});
  std::memset(pageable.data(), 1, static_cast<size_t>(bytes));
  void* pinned = nullptr;
  void* dev = nullptr;
  void* dev2 = nullptr;
  ok(cudaHostAlloc(&pinned, static_cast<size_t>(bytes), cudaHostAllocDefault), "cudaHostAlloc");
  std::memset(pinned, 1, static_cast<size_t>(bytes));
  ok(cudaMalloc(&dev, static_cast<size_t>(bytes)), "cudaMalloc");
  ok(cudaMalloc(&dev2, static_cast<size_t>(bytes)), "cudaMalloc");
  const Device cuda0 = Device::cuda(0);
  const auto through = [&](const void* src) {
    const DeviceCopy c = DeviceCopy::contiguous(dev, src, bytes);
    copy_to_device(cuda0, {&c, 1}, "bench");
  };
  nlohmann::json out;
  out["bytes"] = bytes;
  out["host_memcpy_threads_gb_s"] = bench::memcpy_gbps(1 << 30, 3, true);
  out["cuda_memcpy_pinned_gb_s"] = best_gbps(bytes, [&] {
    ok(cudaMemcpy(dev, pinned, static_cast<size_t>(bytes), cudaMemcpyHostToDevice), "memcpy");
  });
  out["cuda_memcpy_pageable_gb_s"] = best_gbps(bytes, [&] {
    ok(cudaMemcpy(dev, pageable.data(), static_cast<size_t>(bytes), cudaMemcpyHostToDevice),
       "memcpy");
  });
  out["cuda_memcpy_d2d_read_plus_write_gb_s"] =
      2 * best_gbps(bytes, [&] {
        ok(cudaMemcpy(dev2, dev, static_cast<size_t>(bytes), cudaMemcpyDeviceToDevice), "memcpy");
        ok(cudaDeviceSynchronize(), "sync");  // a device-to-device cudaMemcpy returns early
      });
  out["bindery_pinned_gb_s"] = best_gbps(bytes, [&] { through(pinned); });
  out["bindery_d2d_read_plus_write_gb_s"] = 2 * best_gbps(bytes, [&] { through(dev2); });
  nlohmann::json grid = nlohmann::json::array();
  double best = 0;
  for (int workers : {8, 12, 16})
    for (int chunk_mb : {2, 4, 8}) {
      setenv("BINDERY_TRANSFER_WORKERS", std::to_string(workers).c_str(), 1);
      setenv("BINDERY_TRANSFER_CHUNK_MB", std::to_string(chunk_mb).c_str(), 1);
      through(pageable.data());  // allocates the ring outside the timing
      const double g = best_gbps(bytes, [&] { through(pageable.data()); });
      std::fprintf(stderr, "pageable via ring: %2d workers, %2d MiB chunks: %.1f GB/s\n", workers,
                   chunk_mb, g);
      grid.push_back({{"workers", workers}, {"chunk_mb", chunk_mb}, {"gb_s", g}});
      best = std::max(best, g);
    }
  out["bindery_pageable_grid"] = grid;
  out["bindery_pageable_best_gb_s"] = best;
  std::printf("%s\n", out.dump().c_str());
  cudaFree(dev);
  cudaFree(dev2);
  cudaFreeHost(pinned);
  return 0;
}

#pragma once
// parallel_for over [0, n) on the machine's cores (OpenMP). Chunks are static so results of
// reductions done per chunk never depend on scheduling: bit-exact runs are a product promise.

#include <cstdint>
#include <functional>
#include <span>

namespace bindery {

/// Calls fn(begin, end) on disjoint ranges covering [0, n). Runs inline when n < grain.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);
int num_threads();
/// memcpy split into 4 MiB chunks over the cores (one memcpy for small copies).
void parallel_memcpy(void* dst, const void* src, int64_t bytes);

struct CopyTask {
  void* dst;
  const void* src;
  int64_t bytes;
};
/// Many copies as one parallel loop over all their 4 MiB chunks: no barrier between copies,
/// so many medium copies (a refit's slots) run as fast as one large one.
void parallel_memcpy(std::span<const CopyTask> tasks);

}  // namespace bindery

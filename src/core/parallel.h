#pragma once
// parallel_for over [0, n) on the machine's cores (OpenMP). Chunks are static so results of
// reductions done per chunk never depend on scheduling: bit-exact runs are a product promise.

#include <cstdint>
#include <functional>

namespace bindery {

/// Calls fn(begin, end) on disjoint ranges covering [0, n). Runs inline when n < grain.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);
int num_threads();
/// memcpy split into 4 MiB chunks over the cores (one memcpy for small copies).
void parallel_memcpy(void* dst, const void* src, int64_t bytes);

}  // namespace bindery

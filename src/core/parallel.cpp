#include "core/parallel.h"

#include <omp.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <vector>

namespace bindery {

int num_threads() { return omp_get_max_threads(); }

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  const int64_t max_chunks = std::max<int64_t>(1, n / std::max<int64_t>(grain, 1));
  const int threads = static_cast<int>(std::min<int64_t>(num_threads(), max_chunks));
  if (threads <= 1 || omp_in_parallel()) {
    fn(0, n);
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    const int64_t t = omp_get_thread_num();
    const int64_t begin = n * t / threads;
    const int64_t end = n * (t + 1) / threads;
    if (begin < end) fn(begin, end);
  }
}

void parallel_memcpy(void* dst, const void* src, int64_t bytes) {
  const CopyTask task{dst, src, bytes};
  parallel_memcpy(std::span(&task, 1));
}

void parallel_memcpy(std::span<const CopyTask> tasks) {
  constexpr int64_t kChunk = 4 << 20;
  std::vector<CopyTask> chunks;
  for (const CopyTask& t : tasks)
    for (int64_t off = 0; off < t.bytes; off += kChunk)
      chunks.push_back({static_cast<std::byte*>(t.dst) + off,
                        static_cast<const std::byte*>(t.src) + off,
                        std::min(kChunk, t.bytes - off)});
  parallel_for(static_cast<int64_t>(chunks.size()), 4, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      std::memcpy(chunks[i].dst, chunks[i].src, static_cast<size_t>(chunks[i].bytes));
  });
}

}  // namespace bindery

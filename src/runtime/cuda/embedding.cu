// Embedding gather: out[t, :] = table[ids[t], :]. A row copy with 16-byte vectors, one block
// per token. An id outside the table cannot trap (that would kill the context for every
// request in flight), so it writes a zero row and raises a flag the caller reads at its next
// synchronisation.

#include <algorithm>
#include <string>

#include "runtime/cuda/cuda_check.h"
#include "runtime/cuda/device_util.cuh"
#include "runtime/cuda/kernels.h"
#include "runtime/cuda/launch.cuh"

namespace bindery::cuda {
namespace {

__global__ void embedding_kernel(const int32_t* __restrict__ ids, const uint4* __restrict__ table,
                                 int vocab, int row_chunks, uint4* __restrict__ out,
                                 int* __restrict__ error_flag) {
  wait_for_producers();
  allow_dependents();
  const int64_t tok = blockIdx.x;
  const int id = ids[tok];
  const bool ok = id >= 0 && id < vocab;
  if (!ok && threadIdx.x == 0 && error_flag != nullptr) *error_flag = 1;
  const uint4* src = table + static_cast<int64_t>(ok ? id : 0) * row_chunks;
  uint4* dst = out + tok * row_chunks;
  for (int c = threadIdx.x; c < row_chunks; c += blockDim.x)
    dst[c] = ok ? load_cached(src + c) : make_uint4(0, 0, 0, 0);
}

}  // namespace

void embedding_gather(DataType dtype, const int32_t* ids, const void* table, int vocab, int hidden,
                      void* out, int tokens, int* error_flag, cudaStream_t stream) {
  require(dtype_bits(dtype) == 16, "embedding_gather",
          "dtype must be a 2-byte type, got " + std::string(dtype_name(dtype)));
  require(hidden >= 8 && hidden % 8 == 0 && vocab >= 1 && tokens >= 0, "embedding_gather",
          "hidden must be a positive multiple of 8 and vocab >= 1, got hidden=" +
              std::to_string(hidden) + " vocab=" + std::to_string(vocab));
  require(ids && table && out, "embedding_gather", "ids, table and out must be non-null");
  require(aligned16(table) && aligned16(out), "embedding_gather",
          "table and out must be 16-byte aligned");
  if (tokens == 0) return;
  const int row_chunks = hidden / 8;
  const int threads = std::min(512, std::max(32, (row_chunks + 31) / 32 * 32));
  launch_kernel("embedding_kernel", embedding_kernel, tokens, threads, 0, stream, ids,
                static_cast<const uint4*>(table), vocab, row_chunks, static_cast<uint4*>(out),
                error_flag);
}

}  // namespace bindery::cuda

// KV-cache append: copies this step's k and v rows ([tokens, Hkv, D]) to their (slot,
// position) in the cache. One block per token; the sequence of a packed token is found by a
// binary search over cu_seqlens (a handful of sequences, all in L1), so the caller needs no
// per-token index arrays. Out-of-range slots or positions are skipped, never written.

#include <algorithm>
#include <string>

#include "runtime/cuda/cuda_check.h"
#include "runtime/cuda/device_util.cuh"
#include "runtime/cuda/kernels.h"

namespace bindery::cuda {
namespace {

__global__ void kv_append_kernel(const uint4* __restrict__ k, const uint4* __restrict__ v,
                                 const int32_t* __restrict__ cu_seqlens,
                                 const int32_t* __restrict__ slots,
                                 const int32_t* __restrict__ context_lens, int num_seqs,
                                 uint4* __restrict__ k_cache, uint4* __restrict__ v_cache,
                                 int num_slots, int max_seq_len, int row_chunks) {
  const int tok = blockIdx.x;
  int b = tok, first = tok, n = 1;
  if (cu_seqlens != nullptr) {
    int lo = 0, hi = num_seqs;  // last b with cu_seqlens[b] <= tok
    while (hi - lo > 1) {
      const int mid = (lo + hi) / 2;
      if (cu_seqlens[mid] <= tok)
        lo = mid;
      else
        hi = mid;
    }
    b = lo;
    first = cu_seqlens[b];
    n = cu_seqlens[b + 1] - first;
    if (tok >= first + n) return;  // past the last sequence
  }
  const int slot = slots[b];
  const int pos = context_lens[b] - n + (tok - first);
  if (slot < 0 || slot >= num_slots || pos < 0 || pos >= max_seq_len) return;
  const int64_t dst = (static_cast<int64_t>(slot) * max_seq_len + pos) * row_chunks;
  const int64_t src = static_cast<int64_t>(tok) * row_chunks;
  for (int c = threadIdx.x; c < row_chunks; c += blockDim.x) {
    k_cache[dst + c] = load_cached(k + src + c);
    v_cache[dst + c] = load_cached(v + src + c);
  }
}

}  // namespace

void kv_cache_append(const void* k, const void* v, int tokens, const SeqBatchView& batch,
                     const KvCacheView& cache, cudaStream_t stream) {
  constexpr const char* kOp = "kv_cache_append";
  require(dtype_bits(cache.dtype) == 16, kOp,
          "cache dtype must be a 2-byte type, got " + std::string(dtype_name(cache.dtype)));
  require(k && v && cache.k && cache.v, kOp, "k, v and the cache must be non-null");
  require(aligned16(k) && aligned16(v) && aligned16(cache.k) && aligned16(cache.v), kOp,
          "k, v and the cache must be 16-byte aligned");
  require(cache.head_dim >= 8 && cache.head_dim % 8 == 0 && cache.num_kv_heads >= 1, kOp,
          "head_dim must be a positive multiple of 8, got " + std::to_string(cache.head_dim));
  require(batch.slots && batch.context_lens, kOp, "batch needs slots and context_lens");
  require(batch.cu_seqlens != nullptr || tokens <= batch.num_seqs, kOp,
          "without cu_seqlens there is one token per sequence: tokens " + std::to_string(tokens) +
              " > num_seqs " + std::to_string(batch.num_seqs));
  if (tokens <= 0 || batch.num_seqs <= 0) return;
  const int row_chunks = cache.num_kv_heads * cache.head_dim / 8;
  const int threads = std::min(512, std::max(32, (row_chunks + 31) / 32 * 32));
  kv_append_kernel<<<tokens, threads, 0, stream>>>(
      static_cast<const uint4*>(k), static_cast<const uint4*>(v), batch.cu_seqlens, batch.slots,
      batch.context_lens, batch.num_seqs, static_cast<uint4*>(cache.k),
      static_cast<uint4*>(cache.v), cache.num_slots, cache.max_seq_len, row_chunks);
  check_launch("kv_append_kernel");
}

}  // namespace bindery::cuda

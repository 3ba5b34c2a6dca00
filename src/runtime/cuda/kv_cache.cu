// KV-cache append: copies this step's k and v rows ([tokens, Hkv, D]) to their (slot,
// position) in the cache, and its fused form that first applies the rotary embedding to the
// step's q (into its destination) and k (straight into the cache). One block per token; the
// sequence of a packed token is found by a binary search over cu_seqlens (a handful of
// sequences, all in L1), so the caller needs no per-token index arrays. Out-of-range slots or
// positions are skipped, never written.
//
// The fused form exists for decode: rotary q, rotary k and the append were three launches
// (and two copies) per layer, each a few microseconds of a mostly idle GPU.

#include <algorithm>
#include <string>

#include "runtime/cuda/cuda_check.h"
#include "runtime/cuda/device_util.cuh"
#include "runtime/cuda/kernels.h"
#include "runtime/cuda/launch.cuh"
#include "runtime/cuda/rotary_common.cuh"

namespace bindery::cuda {
namespace {

struct CacheTarget {
  const int32_t* cu_seqlens;
  const int32_t* slots;
  const int32_t* context_lens;
  int num_seqs, num_slots, max_seq_len;
};

/// The cache row (slot * max_seq_len + position) of packed token `tok`, or -1 when its slot or
/// position is outside the cache (or the token is past the last sequence).
__device__ __forceinline__ int64_t cache_row(const CacheTarget& c, int tok) {
  int b = tok, first = tok, n = 1;
  if (c.cu_seqlens != nullptr) {
    int lo = 0, hi = c.num_seqs;  // last b with cu_seqlens[b] <= tok
    while (hi - lo > 1) {
      const int mid = (lo + hi) / 2;
      if (c.cu_seqlens[mid] <= tok)
        lo = mid;
      else
        hi = mid;
    }
    b = lo;
    first = c.cu_seqlens[b];
    n = c.cu_seqlens[b + 1] - first;
    if (tok >= first + n) return -1;
  }
  const int slot = c.slots[b];
  const int pos = c.context_lens[b] - n + (tok - first);
  if (slot < 0 || slot >= c.num_slots || pos < 0 || pos >= c.max_seq_len) return -1;
  return static_cast<int64_t>(slot) * c.max_seq_len + pos;
}

__global__ void kv_append_kernel(const uint4* __restrict__ k, const uint4* __restrict__ v,
                                 CacheTarget target, uint4* __restrict__ k_cache,
                                 uint4* __restrict__ v_cache, int row_chunks) {
  wait_for_producers();
  allow_dependents();
  const int tok = blockIdx.x;
  const int64_t row = cache_row(target, tok);
  if (row < 0) return;
  const int64_t dst = row * row_chunks;
  const int64_t src = static_cast<int64_t>(tok) * row_chunks;
  for (int c = threadIdx.x; c < row_chunks; c += blockDim.x) {
    k_cache[dst + c] = load_cached(k + src + c);
    v_cache[dst + c] = load_cached(v + src + c);
  }
}

template <typename T>
__global__ void rope_kv_append_kernel(const T* q_src, T* q_dst, const T* __restrict__ k,
                                      const uint4* __restrict__ v,
                                      const int32_t* __restrict__ positions,
                                      const float* __restrict__ inv_freq, float scaling, int hq,
                                      int hkv, int d, CacheTarget target, T* __restrict__ k_cache,
                                      uint4* __restrict__ v_cache) {
  __shared__ float cos_s[rotary::kMaxHalfDim], sin_s[rotary::kMaxHalfDim];
  wait_for_producers();
  allow_dependents();
  const int tok = blockIdx.x;
  const int half = d / 2;
  rotary::fill_cos_sin<T>(static_cast<float>(positions[tok]), inv_freq, scaling, half, cos_s,
                          sin_s);
  const int64_t row = cache_row(target, tok);
  __syncthreads();
  const int chunks = half / 8;
  const int heads = hq + (row >= 0 ? hkv : 0);
  const int64_t kv_row = static_cast<int64_t>(hkv) * d;
  for (int i = threadIdx.x; i < heads * chunks; i += blockDim.x) {
    const int h = i / chunks, c = i % chunks;
    if (h < hq) {
      const int64_t at = (static_cast<int64_t>(tok) * hq + h) * d;
      rotary::rotate_chunk<T>(q_src + at, q_dst + at, c, half, cos_s, sin_s);
    } else {
      const int kh = h - hq;
      rotary::rotate_chunk<T>(k + tok * kv_row + kh * d, k_cache + row * kv_row + kh * d, c, half,
                              cos_s, sin_s);
    }
  }
  if (row < 0) return;
  const int row_chunks = static_cast<int>(kv_row / 8);
  for (int c = threadIdx.x; c < row_chunks; c += blockDim.x)
    v_cache[row * row_chunks + c] = load_cached(v + static_cast<int64_t>(tok) * row_chunks + c);
}

constexpr const char* kAppend = "kv_cache_append";
constexpr const char* kRopeAppend = "rope_kv_append";

void check_append(const char* op, const void* k, const void* v, int tokens,
                  const SeqBatchView& batch, const KvCacheView& cache) {
  require(dtype_bits(cache.dtype) == 16, op,
          "cache dtype must be a 2-byte type, got " + std::string(dtype_name(cache.dtype)));
  require(k && v && cache.k && cache.v, op, "k, v and the cache must be non-null");
  require(aligned16(k) && aligned16(v) && aligned16(cache.k) && aligned16(cache.v), op,
          "k, v and the cache must be 16-byte aligned");
  require(cache.head_dim >= 8 && cache.head_dim % 8 == 0 && cache.num_kv_heads >= 1, op,
          "head_dim must be a positive multiple of 8, got " + std::to_string(cache.head_dim));
  require(batch.slots && batch.context_lens, op, "batch needs slots and context_lens");
  require(batch.cu_seqlens != nullptr || tokens <= batch.num_seqs, op,
          "without cu_seqlens there is one token per sequence: tokens " + std::to_string(tokens) +
              " > num_seqs " + std::to_string(batch.num_seqs));
}

CacheTarget target_of(const SeqBatchView& batch, const KvCacheView& cache) {
  return {batch.cu_seqlens, batch.slots,     batch.context_lens,
          batch.num_seqs,   cache.num_slots, cache.max_seq_len};
}

int threads_for(int chunks) { return std::min(512, std::max(32, (chunks + 31) / 32 * 32)); }

}  // namespace

void kv_cache_append(const void* k, const void* v, int tokens, const SeqBatchView& batch,
                     const KvCacheView& cache, cudaStream_t stream) {
  check_append(kAppend, k, v, tokens, batch, cache);
  if (tokens <= 0 || batch.num_seqs <= 0) return;
  const int row_chunks = cache.num_kv_heads * cache.head_dim / 8;
  launch_kernel("kv_append_kernel", kv_append_kernel, tokens, threads_for(row_chunks), 0, stream,
                static_cast<const uint4*>(k), static_cast<const uint4*>(v), target_of(batch, cache),
                static_cast<uint4*>(cache.k), static_cast<uint4*>(cache.v), row_chunks);
}

void rope_kv_append(const void* q, void* q_out, const void* k, const void* v,
                    const int32_t* positions, const float* inv_freq, float attention_scaling,
                    int tokens, int num_q_heads, const SeqBatchView& batch,
                    const KvCacheView& cache, cudaStream_t stream) {
  check_append(kRopeAppend, k, v, tokens, batch, cache);
  require_half_dtype(cache.dtype, kRopeAppend);
  const int d = cache.head_dim;
  require(d >= 16 && d % 16 == 0 && d / 2 <= rotary::kMaxHalfDim, kRopeAppend,
          "head_dim must be a multiple of 16 in 16..512, got " + std::to_string(d));
  require(q && q_out && positions && inv_freq && num_q_heads >= 1, kRopeAppend,
          "q, q_out, positions and inv_freq must be non-null, with at least one q head");
  require(aligned16(q) && aligned16(q_out), kRopeAppend, "q and q_out must be 16-byte aligned");
  if (tokens <= 0 || batch.num_seqs <= 0) return;
  const int threads = threads_for((num_q_heads + cache.num_kv_heads) * d / 16);
  const CacheTarget target = target_of(batch, cache);
  if (cache.dtype == DataType::kBF16)
    launch_kernel("rope_kv_append_kernel", rope_kv_append_kernel<bf16>, tokens, threads, 0, stream,
                  static_cast<const bf16*>(q), static_cast<bf16*>(q_out),
                  static_cast<const bf16*>(k), static_cast<const uint4*>(v), positions, inv_freq,
                  attention_scaling, num_q_heads, cache.num_kv_heads, d, target,
                  static_cast<bf16*>(cache.k), static_cast<uint4*>(cache.v));
  else
    launch_kernel("rope_kv_append_kernel", rope_kv_append_kernel<fp16>, tokens, threads, 0, stream,
                  static_cast<const fp16*>(q), static_cast<fp16*>(q_out),
                  static_cast<const fp16*>(k), static_cast<const uint4*>(v), positions, inv_freq,
                  attention_scaling, num_q_heads, cache.num_kv_heads, d, target,
                  static_cast<fp16*>(cache.k), static_cast<uint4*>(cache.v));
}

}  // namespace bindery::cuda

// Prefill attention (causal, GQA, optional sliding window) over packed sequences, in the
// flash-attention-2 scheme on the mma.m16n8k16 tensor-core path.
//
// A block owns 64 queries of one sequence and one query head; each of its 4 warps owns 16 of
// them, with Q held in registers as A fragments. Keys and values come from the KV cache (the
// caller appends this step's k/v first, so a chunked prefill attends to its cached prefix the
// same way) in 64-key tiles, cp.async double-buffered into swizzled shared memory, read back
// with ldmatrix. Softmax state (row max, row sum) and the output accumulator stay in fp32
// registers; only P is rounded to the element type for the PV product. Work per block grows
// with its query tile index under the causal mask, so the grid issues the heavy tiles first.

#include <algorithm>
#include <cmath>
#include <string>

#include "runtime/cuda/attention_common.cuh"
#include "runtime/cuda/cuda_check.h"
#include "runtime/cuda/kernels.h"

namespace bindery::cuda {
namespace {

using namespace attention;

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kStages = 2;  // stage_kv_tiles double-buffers

struct PrefillParams {
  const void* q;
  void* out;
  const int32_t* cu_seqlens;
  const int32_t* slots;
  const int32_t* context_lens;
  const void* k_cache;
  const void* v_cache;
  int num_slots, max_seq_len, hq, hkv, window;
  float scale_log2;
};

template <typename T, int D>
__global__ void __launch_bounds__(kThreads, 2) prefill_kernel(PrefillParams p) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* q_tile = reinterpret_cast<T*>(smem_raw);
  T* k_tiles = q_tile + kTileRows * D;
  T* v_tiles = k_tiles + kStages * kTileRows * D;
  const int b = blockIdx.z, qh = blockIdx.y;
  const int q_tile_idx = gridDim.x - 1 - blockIdx.x;  // heavy (late) tiles first
  const int row_begin = p.cu_seqlens[b];
  const int n_new = p.cu_seqlens[b + 1] - row_begin;
  const int i0 = q_tile_idx * kTileRows;
  if (i0 >= n_new) return;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, t = lane & 3;
  const int slot = p.slots[b];
  const bool slot_ok = slot >= 0 && slot < p.num_slots;
  const int len = slot_ok ? min(max(p.context_lens[b], 0), p.max_seq_len) : 0;
  const int start = len - n_new;  // position of new token 0
  const int kvh = qh / (p.hq / p.hkv);

  // Keys any row of this block can see: [kmin, kmax].
  const int last_row = min(i0 + kTileRows, n_new) - 1;
  const int kmax = min(start + last_row, len - 1);
  const int kmin = max(0, p.window > 0 ? start + i0 - p.window + 1 : 0);
  const int tile_first = kmin / kTileRows;
  const int tiles = kmax >= kmin ? kmax / kTileRows - tile_first + 1 : 0;

  const int64_t q_stride = static_cast<int64_t>(p.hq) * D;
  const T* q_base =
      static_cast<const T*>(p.q) + static_cast<int64_t>(row_begin) * q_stride + qh * D;
  const int64_t kv_stride = static_cast<int64_t>(p.hkv) * D;
  const int64_t slot_off = static_cast<int64_t>(slot_ok ? slot : 0) * p.max_seq_len * kv_stride;
  const T* k_base = static_cast<const T*>(p.k_cache) + slot_off + kvh * D;
  const T* v_base = static_cast<const T*>(p.v_cache) + slot_off + kvh * D;

  load_tile_async<T, D>(q_tile, q_base, q_stride, i0, n_new, threadIdx.x, kThreads);
  if (tiles > 0) {
    load_tile_async<T, D>(k_tiles, k_base, kv_stride, tile_first * kTileRows, len, threadIdx.x,
                          kThreads);
    load_tile_async<T, D>(v_tiles, v_base, kv_stride, tile_first * kTileRows, len, threadIdx.x,
                          kThreads);
  }
  cp_async_commit();

  // Positions of this warp's rows (row g: p_lo + g, row g+8: p_lo + g + 8).
  const int p_lo = start + i0 + warp * 16;
  const int p_hi = p_lo + 15;
  const int pos0 = p_lo + g, pos1 = pos0 + 8;

  uint32_t qa[D / 16][4];
  float o[D / 8][4] = {};
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  for (int it = 0; it < tiles; ++it) {
    stage_kv_tiles<T, D>(it, tiles, tile_first, k_tiles, v_tiles, k_base, v_base, kv_stride, len,
                         kThreads);
    if (it == 0) load_a_fragments<T, D>(qa, q_tile, warp * 16, lane);
    const int st = it % kStages;
    const int tk = (tile_first + it) * kTileRows;
    // Skip tiles this warp sees nothing of (past its last row, or before its window).
    const bool any = tk <= p_hi && (p.window <= 0 || tk + kTileRows - 1 > p_lo - p.window);
    if (any) {
      float s[8][4] = {};
      qk_tile<T, D, 8>(s, qa, k_tiles + st * kTileRows * D, 0, lane);
      const bool full = tk + kTileRows - 1 <= p_lo && (p.window <= 0 || p_hi - tk < p.window);
      if (full) {
#pragma unroll
        for (int n = 0; n < 8; ++n)
#pragma unroll
          for (int e = 0; e < 4; ++e) s[n][e] *= p.scale_log2;
      } else {
#pragma unroll
        for (int n = 0; n < 8; ++n)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int key = tk + n * 8 + 2 * t + (e & 1);
            const int pos = e < 2 ? pos0 : pos1;
            const bool visible = key <= pos && (p.window <= 0 || pos - key < p.window);
            s[n][e] = visible ? s[n][e] * p.scale_log2 : -INFINITY;
          }
      }
      online_softmax<D, 8>(s, m, l, o);
      pv_tile<T, D, 8>(o, s, v_tiles + st * kTileRows * D, 0, lane);
    }
    __syncthreads();  // the stage is refilled next iteration
  }
  cp_async_wait<0>();

  quad_sum(l);
  const float inv0 = l[0] > 0.f ? 1.f / l[0] : 0.f;
  const float inv1 = l[1] > 0.f ? 1.f / l[1] : 0.f;
  const int r0 = i0 + warp * 16 + g, r1 = r0 + 8;
  T* out = static_cast<T*>(p.out) + static_cast<int64_t>(row_begin) * q_stride + qh * D;
#pragma unroll
  for (int j = 0; j < D / 8; ++j) {
    const int c = j * 8 + 2 * t;
    if (r0 < n_new)
      *reinterpret_cast<uint32_t*>(out + r0 * q_stride + c) =
          pack2<T>(o[j][0] * inv0, o[j][1] * inv0);
    if (r1 < n_new)
      *reinterpret_cast<uint32_t*>(out + r1 * q_stride + c) =
          pack2<T>(o[j][2] * inv1, o[j][3] * inv1);
  }
}

template <typename T, int D>
void launch(const PrefillParams& p, int seqs, int max_new_tokens, cudaStream_t stream) {
  constexpr int kSmem = (1 + 2 * kStages) * kTileRows * D * static_cast<int>(sizeof(T));
  // Per device and cheap (no synchronisation), so set on every launch rather than cached.
  check_cuda(cudaFuncSetAttribute(prefill_kernel<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  kSmem),
             "cudaFuncSetAttribute(prefill_kernel)");
  const int q_tiles = (max_new_tokens + kTileRows - 1) / kTileRows;
  prefill_kernel<T, D><<<dim3(q_tiles, p.hq, seqs), kThreads, kSmem, stream>>>(p);
  check_launch("prefill_kernel");
}

}  // namespace

void prefill_attention(const void* q, void* out, int tokens, int num_q_heads,
                       const SeqBatchView& batch, const KvCacheView& cache, int sliding_window,
                       cudaStream_t stream) {
  constexpr const char* kOp = "prefill_attention";
  require_half_dtype(cache.dtype, kOp);
  require(cache.k && cache.v && aligned16(cache.k) && aligned16(cache.v), kOp,
          "cache k and v must be non-null and 16-byte aligned");
  require(cache.head_dim == 64 || cache.head_dim == 128, kOp,
          "head_dim must be 64 or 128, got " + std::to_string(cache.head_dim));
  require(cache.num_slots >= 1 && cache.max_seq_len >= 1 && cache.num_kv_heads >= 1, kOp,
          "cache needs num_slots, max_seq_len and num_kv_heads >= 1");
  require(q && out && aligned16(q) && aligned16(out), kOp,
          "q and out must be non-null and 16-byte aligned");
  require(batch.cu_seqlens && batch.slots && batch.context_lens, kOp,
          "batch needs cu_seqlens, slots and context_lens");
  require(num_q_heads >= 1 && num_q_heads % cache.num_kv_heads == 0, kOp,
          "num_q_heads must be a multiple of num_kv_heads, got " + std::to_string(num_q_heads) +
              " / " + std::to_string(cache.num_kv_heads));
  require(batch.max_new_tokens >= 1 && batch.max_new_tokens <= 65535 * 64, kOp,
          "max_new_tokens must be >= 1, got " + std::to_string(batch.max_new_tokens));
  require(num_q_heads <= 65535 && batch.num_seqs <= 65535, kOp, "too many heads or sequences");
  if (batch.num_seqs <= 0 || tokens <= 0) return;
  PrefillParams p{};
  p.q = q;
  p.out = out;
  p.cu_seqlens = batch.cu_seqlens;
  p.slots = batch.slots;
  p.context_lens = batch.context_lens;
  p.k_cache = cache.k;
  p.v_cache = cache.v;
  p.num_slots = cache.num_slots;
  p.max_seq_len = cache.max_seq_len;
  p.hq = num_q_heads;
  p.hkv = cache.num_kv_heads;
  p.window = sliding_window;
  p.scale_log2 = kLog2e / std::sqrt(static_cast<float>(cache.head_dim));
  const bool bf = cache.dtype == DataType::kBF16;
  const int seqs = batch.num_seqs, mt = batch.max_new_tokens;
  if (cache.head_dim == 128)
    bf ? launch<bf16, 128>(p, seqs, mt, stream) : launch<fp16, 128>(p, seqs, mt, stream);
  else
    bf ? launch<bf16, 64>(p, seqs, mt, stream) : launch<fp16, 64>(p, seqs, mt, stream);
}

}  // namespace bindery::cuda

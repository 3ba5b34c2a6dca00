// Decode attention (one new query per sequence) over the KV cache: flash-decoding with GQA.
//
// The cost is reading K and V of the context once; everything else must hide under that.
// - A block owns one (sequence, kv head, split of the context): the G = Hq/Hkv query heads
//   that share the kv head are the rows of one 16-row tensor-core tile, so K/V are read once
//   per group, not once per query head, and QK^T / PV run as mma (rows G..15 are padding).
// - The split's keys stream through 64-key shared-memory tiles (cp.async, double-buffered);
//   each of the 4 warps takes 16 keys of every tile with its own online-softmax state, and
//   the warps merge at the end through shared memory.
// - Splits are chosen so that sequences × kv heads × splits fills the GPU (~3 blocks per SM)
//   even at batch 1, in one wave; the last split block of a (sequence, kv head) to finish
//   merges the splits by their log-sum-exp (an atomic counter in the workspace), so there is
//   no second launch. With one split the block writes the output directly.

#include <algorithm>
#include <cmath>
#include <string>

#include "runtime/cuda/attention_common.cuh"
#include "runtime/cuda/cuda_check.h"
#include "runtime/cuda/kernels.h"
#include "runtime/cuda/launch.cuh"

namespace bindery::cuda {
namespace {

using namespace attention;

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kStages = 2;       // stage_kv_tiles double-buffers
constexpr int kMaxSplits = 256;  // the merge keeps [group <= 16][splits] weights in smem

struct DecodeParams {
  const void* q;
  void* out;
  const int32_t* cu_seqlens;
  const int32_t* slots;
  const int32_t* context_lens;
  const void* k_cache;
  const void* v_cache;
  int* ws_count;  // [seqs, hkv] splits finished so far (zero between launches)
  float* ws_lse;  // [seqs, hq, splits] log2-sum-exp of each split (-inf: empty)
  float* ws_o;    // [seqs, hq, splits, D] normalized partial outputs
  int num_slots, max_seq_len, hq, hkv, window, splits, split_keys;
  float scale_log2;
};

struct SplitPlan {
  int splits;
  int split_keys;  // keys per split, a multiple of 64
};

/// Enough splits that sequences × kv heads × splits fills the GPU in one wave (3 blocks of
/// 64 KB shared memory per SM), none for a short context (a merge costs more than it saves).
SplitPlan plan_splits(int seqs, int hkv, int max_context_len) {
  const int tiles = std::max(1, (max_context_len + kTileRows - 1) / kTileRows);
  const int groups = std::max(1, seqs * hkv);
  const int want = tiles <= 4 ? 1 : std::max(1, 3 * multiprocessor_count() / groups);
  int splits = std::clamp(want, 1, std::min(tiles, kMaxSplits));
  const int tiles_per_split = (tiles + splits - 1) / splits;
  splits = (tiles + tiles_per_split - 1) / tiles_per_split;
  return {splits, tiles_per_split * kTileRows};
}

__device__ __forceinline__ int clamped_len(const DecodeParams& p, int b, int slot) {
  if (slot < 0 || slot >= p.num_slots) return 0;
  return min(max(p.context_lens[b], 0), p.max_seq_len);
}

template <typename T, int D>
__global__ void __launch_bounds__(kThreads) decode_kernel(DecodeParams p) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* k_tiles = reinterpret_cast<T*>(smem_raw);
  T* v_tiles = k_tiles + kStages * kTileRows * D;
  // kv head fastest: the blocks reading one position's Hkv * D row run side by side, so each
  // DRAM page is opened once.
  const int kvh = blockIdx.x, split = blockIdx.y, b = blockIdx.z;
  wait_for_producers();  // q and this step's cache rows come from the kernels before
  allow_dependents();
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, t = lane & 3;
  const int group = p.hq / p.hkv;
  const int slot = p.slots[b];
  const int len = clamped_len(p, b, slot);
  const int split_lo = split * p.split_keys;
  if (split > 0 && split_lo >= len) return;  // past the end: the merge reads no such split
  const int lo = max(split_lo, p.window > 0 ? len - p.window : 0);
  const int hi = min(len, split_lo + p.split_keys);

  const int64_t row_stride = static_cast<int64_t>(p.hkv) * D;
  const T* k_base = static_cast<const T*>(p.k_cache) +
                    static_cast<int64_t>(max(slot, 0)) * p.max_seq_len * row_stride + kvh * D;
  const T* v_base = static_cast<const T*>(p.v_cache) +
                    static_cast<int64_t>(max(slot, 0)) * p.max_seq_len * row_stride + kvh * D;
  const int tile_first = lo / kTileRows;
  const int tiles = lo < hi ? (hi + kTileRows - 1) / kTileRows - tile_first : 0;
  if (tiles > 0) {
    load_tile_async<T, D>(k_tiles, k_base, row_stride, tile_first * kTileRows, len, threadIdx.x,
                          kThreads);
    load_tile_async<T, D>(v_tiles, v_base, row_stride, tile_first * kTileRows, len, threadIdx.x,
                          kThreads);
  }
  cp_async_commit();

  // Q rows g and g+8 of the group as A fragments, straight from global memory (read once).
  const int q_row = p.cu_seqlens ? p.cu_seqlens[b + 1] - 1 : b;
  const T* q = static_cast<const T*>(p.q) + (static_cast<int64_t>(q_row) * p.hq + kvh * group) * D;
  uint32_t qa[D / 16][4];
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    const int c = kk * 16 + 2 * t;
    qa[kk][0] = g < group ? *reinterpret_cast<const uint32_t*>(q + g * D + c) : 0u;
    qa[kk][1] = g + 8 < group ? *reinterpret_cast<const uint32_t*>(q + (g + 8) * D + c) : 0u;
    qa[kk][2] = g < group ? *reinterpret_cast<const uint32_t*>(q + g * D + c + 8) : 0u;
    qa[kk][3] = g + 8 < group ? *reinterpret_cast<const uint32_t*>(q + (g + 8) * D + c + 8) : 0u;
  }

  float o[D / 8][4] = {};
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  for (int it = 0; it < tiles; ++it) {
    stage_kv_tiles<T, D>(it, tiles, tile_first, k_tiles, v_tiles, k_base, v_base, row_stride, len,
                         kThreads);
    const int st = it % kStages;
    const int key0 = (tile_first + it) * kTileRows + warp * 16;
    if (key0 + 16 > lo && key0 < hi) {  // this warp's 16 keys overlap [lo, hi)
      float s[2][4] = {};
      qk_tile<T, D, 2>(s, qa, k_tiles + st * kTileRows * D, warp * 16, lane);
#pragma unroll
      for (int n = 0; n < 2; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int key = key0 + n * 8 + 2 * t + (e & 1);
          s[n][e] = key >= lo && key < hi ? s[n][e] * p.scale_log2 : -INFINITY;
        }
      online_softmax<D, 2>(s, m, l, o);
      pv_tile<T, D, 2>(o, s, v_tiles + st * kTileRows * D, warp * 16, lane);
    }
    __syncthreads();  // the stage is refilled next iteration
  }
  cp_async_wait<0>();

  // Merge the 4 warps' states (only the group's rows) through shared memory, reusing the tiles.
  quad_sum(l);
  float* ws_m = reinterpret_cast<float*>(smem_raw);  // [warps][16]
  float* ws_l = ws_m + kWarps * 16;                  // [warps][16]
  float* ws_ov = ws_l + kWarps * 16;                 // [warps][16][D]
  __syncthreads();
  if (t == 0) {
    ws_m[warp * 16 + g] = m[0];
    ws_m[warp * 16 + g + 8] = m[1];
    ws_l[warp * 16 + g] = l[0];
    ws_l[warp * 16 + g + 8] = l[1];
  }
#pragma unroll
  for (int j = 0; j < D / 8; ++j) {
    float* r0 = ws_ov + (warp * 16 + g) * D + j * 8 + 2 * t;
    float* r1 = ws_ov + (warp * 16 + g + 8) * D + j * 8 + 2 * t;
    r0[0] = o[j][0];
    r0[1] = o[j][1];
    r1[0] = o[j][2];
    r1[1] = o[j][3];
  }
  __syncthreads();
  for (int i = threadIdx.x; i < group * D; i += kThreads) {
    const int row = i / D, dim = i % D;
    float mx = -INFINITY;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) mx = fmaxf(mx, ws_m[w * 16 + row]);
    float sum = 0.f, acc = 0.f;
    if (mx != -INFINITY) {
#pragma unroll
      for (int w = 0; w < kWarps; ++w) {
        const float sc = fast_exp2(ws_m[w * 16 + row] - mx);
        sum += ws_l[w * 16 + row] * sc;
        acc += ws_ov[(w * 16 + row) * D + dim] * sc;
      }
    }
    const float val = sum > 0.f ? acc / sum : 0.f;
    const int qh = kvh * group + row;
    if (p.splits == 1) {
      static_cast<T*>(p.out)[(static_cast<int64_t>(q_row) * p.hq + qh) * D + dim] =
          from_float<T>(val);
    } else {
      const int64_t idx = (static_cast<int64_t>(b) * p.hq + qh) * p.splits + split;
      p.ws_o[idx * D + dim] = val;
      if (dim == 0) p.ws_lse[idx] = sum > 0.f ? mx + __log2f(sum) : -INFINITY;
    }
  }
  if (p.splits == 1) return;

  // The last split of this (sequence, kv head) to finish merges all of them by their
  // log-sum-exp: no second launch. It sets the counter back to zero for the next launch.
  __shared__ int is_last;
  __threadfence();  // this block's partials are visible before it is counted
  __syncthreads();
  const int used = max(1, min(p.splits, (len + p.split_keys - 1) / p.split_keys));
  if (threadIdx.x == 0) {
    int* counter = p.ws_count + b * p.hkv + kvh;
    is_last = atomicAdd(counter, 1) == used - 1;
  }
  __syncthreads();
  if (!is_last) return;
  if (threadIdx.x == 0) p.ws_count[b * p.hkv + kvh] = 0;  // every split has counted
  __threadfence();
  // Merge weights exp2(lse_s - max) / sum into shared memory (the tiles are free now): all
  // loads of a phase are independent, so the tail costs a few L2 round trips, not `used`.
  float* w_s = reinterpret_cast<float*>(smem_raw);  // [group][used]
  const int64_t head0 = static_cast<int64_t>(b) * p.hq + kvh * group;
  for (int i = threadIdx.x; i < group * used; i += kThreads)
    w_s[i] = __ldcg(p.ws_lse + (head0 + i / used) * p.splits + i % used);
  __syncthreads();
  for (int row = warp; row < group; row += kWarps) {
    float* w_row = w_s + row * used;
    float mx = -INFINITY;
    for (int s = lane; s < used; s += 32) mx = fmaxf(mx, w_row[s]);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    float sum = 0.f;
    for (int s = lane; s < used; s += 32) sum += mx == -INFINITY ? 0.f : fast_exp2(w_row[s] - mx);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    __syncwarp();
    const float inv = sum > 0.f ? 1.f / sum : 0.f;
    for (int s = lane; s < used; s += 32)
      w_row[s] = mx == -INFINITY ? 0.f : fast_exp2(w_row[s] - mx) * inv;
  }
  __syncthreads();
  // out[row][4 dims] = sum_s w[row][s] * o_s[row][4 dims], eight splits' loads in flight.
  for (int i = threadIdx.x; i < group * (D / 4); i += kThreads) {
    const int row = i / (D / 4), d4 = i % (D / 4);
    const float* w_row = w_s + row * used;
    const float4* o_row = reinterpret_cast<const float4*>(p.ws_o + (head0 + row) * p.splits * D);
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll 8
    for (int s = 0; s < used; ++s) {
      const float w = w_row[s];
      const float4 v = __ldcg(o_row + s * (D / 4) + d4);
      acc.x += w * v.x, acc.y += w * v.y, acc.z += w * v.z, acc.w += w * v.w;
    }
    T* dst = static_cast<T*>(p.out) + (static_cast<int64_t>(q_row) * p.hq + kvh * group + row) * D +
             d4 * 4;
    const uint32_t lo = pack2<T>(acc.x, acc.y), hi = pack2<T>(acc.z, acc.w);
    *reinterpret_cast<uint2*>(dst) = make_uint2(lo, hi);
  }
}

template <typename T, int D>
void launch(const DecodeParams& p, int seqs, cudaStream_t stream) {
  constexpr int kSmem = 2 * kStages * kTileRows * D * static_cast<int>(sizeof(T));
  static_assert(kSmem >= static_cast<int>(sizeof(float)) * kWarps * 16 * (D + 2));
  static_assert(kSmem >= static_cast<int>(sizeof(float)) * 16 * kMaxSplits);
  // Per device and cheap (no synchronisation), so set on every launch rather than cached.
  check_cuda(
      cudaFuncSetAttribute(decode_kernel<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem),
      "cudaFuncSetAttribute(decode_kernel)");
  launch_kernel("decode_kernel", decode_kernel<T, D>, dim3(p.hkv, p.splits, seqs), kThreads, kSmem,
                stream, p);
}

/// Workspace layout: split counters, log-sum-exps, outputs, each 256-byte aligned.
size_t round256(size_t bytes) { return (bytes + 255) / 256 * 256; }
size_t counter_bytes(int seqs, int hkv) {
  return round256(static_cast<size_t>(seqs) * hkv * sizeof(int));
}

void check_cache(const KvCacheView& c, const char* op) {
  require_half_dtype(c.dtype, op);
  require(c.k && c.v, op, "cache k and v must be non-null");
  require(aligned16(c.k) && aligned16(c.v), op, "cache k and v must be 16-byte aligned");
  require(c.head_dim == 64 || c.head_dim == 128, op,
          "head_dim must be 64 or 128, got " + std::to_string(c.head_dim));
  require(c.num_slots >= 1 && c.max_seq_len >= 1 && c.num_kv_heads >= 1, op,
          "cache needs num_slots, max_seq_len and num_kv_heads >= 1");
}

}  // namespace

size_t decode_attention_workspace_bytes(int num_seqs, int num_q_heads, int num_kv_heads,
                                        int head_dim, int max_context_len) {
  if (num_seqs <= 0 || num_kv_heads <= 0) return 0;
  const SplitPlan plan = plan_splits(num_seqs, num_kv_heads, max_context_len);
  if (plan.splits == 1) return 0;
  const size_t partials = static_cast<size_t>(num_seqs) * num_q_heads * plan.splits;
  return counter_bytes(num_seqs, num_kv_heads) + round256(partials * sizeof(float)) +
         partials * head_dim * sizeof(float);
}

void decode_attention(const void* q, void* out, int num_q_heads, const SeqBatchView& batch,
                      const KvCacheView& cache, int sliding_window, void* workspace,
                      size_t workspace_bytes, cudaStream_t stream, WorkspaceCounters counters) {
  constexpr const char* kOp = "decode_attention";
  check_cache(cache, kOp);
  require(q && out && aligned16(q) && aligned16(out), kOp,
          "q and out must be non-null and 16-byte aligned");
  require(batch.num_seqs >= 0 && batch.slots && batch.context_lens, kOp,
          "batch needs slots and context_lens");
  require(batch.max_context_len >= 1 && batch.max_context_len <= cache.max_seq_len, kOp,
          "max_context_len must be in 1..max_seq_len (" + std::to_string(cache.max_seq_len) +
              "), got " + std::to_string(batch.max_context_len));
  require(num_q_heads % cache.num_kv_heads == 0 && num_q_heads / cache.num_kv_heads <= 16, kOp,
          "num_q_heads must be a multiple of num_kv_heads with at most 16 per kv head, got " +
              std::to_string(num_q_heads) + " / " + std::to_string(cache.num_kv_heads));
  if (batch.num_seqs == 0) return;
  const SplitPlan plan = plan_splits(batch.num_seqs, cache.num_kv_heads, batch.max_context_len);
  const size_t need = decode_attention_workspace_bytes(
      batch.num_seqs, num_q_heads, cache.num_kv_heads, cache.head_dim, batch.max_context_len);
  require(need == 0 || aligned16(workspace), kOp, "workspace must be 16-byte aligned");
  require(
      workspace_bytes >= need && (need == 0 || workspace != nullptr), kOp,
      "workspace of " + std::to_string(workspace_bytes) + " bytes, need " + std::to_string(need));
  DecodeParams p{};
  p.q = q;
  p.out = out;
  p.cu_seqlens = batch.cu_seqlens;
  p.slots = batch.slots;
  p.context_lens = batch.context_lens;
  p.k_cache = cache.k;
  p.v_cache = cache.v;
  if (need) {
    const size_t partials = static_cast<size_t>(batch.num_seqs) * num_q_heads * plan.splits;
    char* ws = static_cast<char*>(workspace);
    p.ws_count = reinterpret_cast<int*>(ws);
    p.ws_lse = reinterpret_cast<float*>(ws + counter_bytes(batch.num_seqs, cache.num_kv_heads));
    p.ws_o = reinterpret_cast<float*>(reinterpret_cast<char*>(p.ws_lse) +
                                      round256(partials * sizeof(float)));
    // The split counters start at zero and every launch leaves them there; a workspace that
    // other work wrote since is cleared here (a few hundred bytes, in order on the stream).
    if (counters != WorkspaceCounters::kZERO)
      check_cuda(
          cudaMemsetAsync(p.ws_count, 0, counter_bytes(batch.num_seqs, cache.num_kv_heads), stream),
          "decode_attention: clearing the split counters");
  }
  p.num_slots = cache.num_slots;
  p.max_seq_len = cache.max_seq_len;
  p.hq = num_q_heads;
  p.hkv = cache.num_kv_heads;
  p.window = sliding_window;
  p.splits = plan.splits;
  p.split_keys = plan.split_keys;
  p.scale_log2 = kLog2e / std::sqrt(static_cast<float>(cache.head_dim));
  const bool bf = cache.dtype == DataType::kBF16;
  if (cache.head_dim == 128)
    bf ? launch<bf16, 128>(p, batch.num_seqs, stream)
       : launch<fp16, 128>(p, batch.num_seqs, stream);
  else
    bf ? launch<bf16, 64>(p, batch.num_seqs, stream) : launch<fp16, 64>(p, batch.num_seqs, stream);
}

}  // namespace bindery::cuda

// Token selection on the device: argmax, and temperature + top-k + top-p sampling.
//
// One block per row; the vocabulary row (~0.5 MB of fp32 logits for Llama 3) stays in L2
// across the passes, and no pass sorts the whole row:
// - top-k: radix selection on an order-preserving 32-bit key of each logit, 8 bits per pass
//   through 256-bin shared histograms of counts (8 copies: the high digits of nearby logits
//   collide, and shared atomics on one address serialize), gives the k-th largest exactly.
//   Temperature never changes the order, so thresholds work on the raw logits; probabilities
//   are 2^((logit - max) * log2(e) / T). One SM does all of a row's passes, so what each
//   element costs in instructions (no division, no precise exp) is what the kernel costs.
// - Fast path (top-k, or top-p alone, which first selects the 4096 most likely tokens the
//   same way): the selected tokens (ties kept, up to 8192) are gathered into shared memory,
//   bitonic-sorted by logit, and their prefix sums of probability give the top-p cut
//   (transformers keeps a token when the mass strictly above it is below top_p) and the draw:
//   inverse CDF over the kept tokens from the most to the least likely.
// - Slow path, only when more than 8192 tokens pass top-k or the top-p set is larger than
//   the 4096 candidates: the top-p cut by radix selection over probability-mass histograms of
//   the whole row, and the draw in index order.
// - No filter: the draw in index order over the row (per-thread segments, a block scan, one
//   thread walks its segment).
// u comes from Philox (philox.h), so a (seed, step, row) always picks the same token.
// Ties at a threshold are kept (transformers' TopK keeps them too; its TopP splits them by sort
// order, which is arbitrary anyway).

#include <climits>
#include <cmath>
#include <string>

#include "runtime/cuda/cuda_check.h"
#include "runtime/cuda/device_util.cuh"
#include "runtime/cuda/kernels.h"
#include "runtime/cuda/philox.h"

namespace bindery::cuda {
namespace {

constexpr int kThreads = 1024;
constexpr int kWarps = kThreads / 32;
constexpr int kCandidates = 4096;  // top-p alone: the p-set must lie within these
constexpr int kCapacity = 8192;    // candidates held in shared memory (ties can exceed top_k)
constexpr int kPerThread = kCapacity / kThreads;
constexpr int kCandidateSmem = 3 * kCapacity * 4;  // value, index, prefix sum: 96 KB dynamic
constexpr int kUnroll = 4;                         // row loads in flight per thread
constexpr int kHistCopies = 8;                     // sub-histograms, by warp

/// Larger float -> larger key (NaN aside), so radix selection on keys orders logits.
__device__ __forceinline__ uint32_t order_key(float x) {
  const uint32_t u = __float_as_uint(x);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

/// Unnormalized probability of logit x: exp((x - max) / T) as 2^((x - max) * c).
__device__ __forceinline__ float weight(float x, float xmax, float c) {
  return exp2f((x - xmax) * c);
}

/// torch.argmax order: NaN above everything, then larger values, ties to the lower index.
__device__ __forceinline__ bool better(float a, int ia, float b, int ib) {
  const bool an = isnan(a), bn = isnan(b);
  if (an != bn) return an;
  if (!an && a != b) return a > b;
  return ia < ib;
}

struct Scratch {
  float f[kWarps];
  int i[kWarps];
  union {
    int count[kHistCopies][256];
    float mass[kHistCopies][256];
  } hist;
  int digit;
  int remaining;
  float above;
  int chosen;
  int cand_n;
  int keep_n;
};

/// The fast path's candidates, in dynamic shared memory.
struct Candidates {
  float* x;
  int* i;
  float* cum;
};

__device__ int block_argmax(const float* x, int vocab, Scratch& sc) {
  float bv = -INFINITY;
  int bi = INT_MAX;
  // Four independent loads in flight per thread: one block streams the whole row.
  for (int base = threadIdx.x; base < vocab; base += 4 * kThreads) {
    float v[4];
#pragma unroll
    for (int u = 0; u < 4; ++u) v[u] = base + u * kThreads < vocab ? x[base + u * kThreads] : 0.f;
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const int i = base + u * kThreads;
      if (i < vocab && better(v[u], i, bv, bi)) bv = v[u], bi = i;
    }
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
    const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (better(ov, oi, bv, bi)) bv = ov, bi = oi;
  }
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  if (lane == 0) sc.f[warp] = bv, sc.i[warp] = bi;
  __syncthreads();
  bv = sc.f[0];
  bi = sc.i[0];
  for (int w = 1; w < kWarps; ++w)
    if (better(sc.f[w], sc.i[w], bv, bi)) bv = sc.f[w], bi = sc.i[w];
  __syncthreads();
  return bi == INT_MAX ? 0 : bi;
}

__device__ float block_sum(float v, Scratch& sc) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if ((threadIdx.x & 31) == 0) sc.f[threadIdx.x >> 5] = v;
  __syncthreads();
  float s = 0.f;
  for (int w = 0; w < kWarps; ++w) s += sc.f[w];
  __syncthreads();
  return s;
}

__device__ float block_max(float v, Scratch& sc) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  if ((threadIdx.x & 31) == 0) sc.f[threadIdx.x >> 5] = v;
  __syncthreads();
  float s = -INFINITY;
  for (int w = 0; w < kWarps; ++w) s = fmaxf(s, sc.f[w]);
  __syncthreads();
  return s;
}

/// Exclusive prefix sum of one value per thread, in thread order; also returns the total.
__device__ float block_exclusive_scan(float v, float& total, Scratch& sc) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  float incl = v;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const float n = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += n;
  }
  if (lane == 31) sc.f[warp] = incl;
  __syncthreads();
  float before = 0.f;
  total = 0.f;
  for (int w = 0; w < kWarps; ++w) {
    if (w < warp) before += sc.f[w];
    total += sc.f[w];
  }
  __syncthreads();
  return before + incl - v;
}

/// Radix selection of a threshold key among the row's logits with key >= `floor_key`. With
/// counts (mass == false): the key of the `k`-th largest. With mass: the largest key t such
/// that the mass of keys >= t reaches `target`.
__device__ uint32_t radix_select(const float* x, int vocab, float c, float xmax, uint32_t floor_key,
                                 bool mass, int k, float target, Scratch& sc) {
  uint32_t prefix = 0, mask = 0;
  const int copy = (threadIdx.x >> 5) % kHistCopies;
  if (threadIdx.x == 0) sc.remaining = k, sc.above = 0.f;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int i = threadIdx.x; i < kHistCopies * 256; i += kThreads) (&sc.hist.count[0][0])[i] = 0;
    __syncthreads();
    // Shared float atomics are a compare-and-swap loop: a thread sums a run of equal digits
    // before it adds.
    int run_digit = -1;
    float run_mass = 0.f;
    for (int base = threadIdx.x; base < vocab; base += kUnroll * kThreads) {
      float vals[kUnroll];
#pragma unroll
      for (int q = 0; q < kUnroll; ++q)
        vals[q] = base + q * kThreads < vocab ? x[base + q * kThreads] : 0.f;
#pragma unroll
      for (int q = 0; q < kUnroll; ++q) {
        if (base + q * kThreads >= vocab) continue;
        const float v = vals[q];
        const uint32_t key = order_key(v);
        if (key < floor_key || (key & mask) != prefix) continue;
        const int d = (key >> shift) & 255;
        if (!mass) {
          atomicAdd(&sc.hist.count[copy][d], 1);
        } else if (d == run_digit) {
          run_mass += weight(v, xmax, c);
        } else {
          if (run_digit >= 0) atomicAdd(&sc.hist.mass[copy][run_digit], run_mass);
          run_digit = d;
          run_mass = weight(v, xmax, c);
        }
      }
    }
    if (run_digit >= 0) atomicAdd(&sc.hist.mass[copy][run_digit], run_mass);
    __syncthreads();
    if (threadIdx.x < 32) {
      // Lane j owns digits 255-8j .. 248-8j (descending); a suffix scan from the top finds
      // the first digit where the running amount reaches what is still needed.
      const int lane = threadIdx.x;
      float amount[8], lane_total = 0.f;
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const int d = 255 - lane * 8 - j;
        float a = 0.f;
#pragma unroll
        for (int cp = 0; cp < kHistCopies; ++cp)
          a += mass ? sc.hist.mass[cp][d] : static_cast<float>(sc.hist.count[cp][d]);
        amount[j] = a;
        lane_total += a;
      }
      float incl = lane_total;
#pragma unroll
      for (int o = 1; o < 32; o <<= 1) {
        const float n = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += n;
      }
      const float need = mass ? target - sc.above : static_cast<float>(sc.remaining);
      float run = incl - lane_total;  // amount above this lane's digits
      int found = -1;
      float above_found = 0.f;
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        if (found < 0 && amount[j] > 0.f && run + amount[j] >= need) {
          found = 255 - lane * 8 - j;
          above_found = run;
        }
        run += amount[j];
      }
      // The first lane (highest digits) that found one wins.
      const unsigned hit = __ballot_sync(0xffffffffu, found >= 0);
      int lowest_nonzero = -1;  // rounding fallback: keep the whole range
#pragma unroll
      for (int j = 0; j < 8; ++j)
        if (amount[j] > 0.f) lowest_nonzero = 255 - lane * 8 - j;
      const unsigned nz = __ballot_sync(0xffffffffu, lowest_nonzero >= 0);
      if (hit != 0u) {
        const int src = __ffs(hit) - 1;
        const int d = __shfl_sync(0xffffffffu, found, src);
        const float a = __shfl_sync(0xffffffffu, above_found, src);
        if (lane == 0) {
          sc.digit = d;
          if (mass)
            sc.above += a;
          else
            sc.remaining -= static_cast<int>(a);
        }
      } else {
        const int src = nz != 0u ? 31 - __clz(nz) : 0;
        const int d = __shfl_sync(0xffffffffu, lowest_nonzero, src);
        const float a = __shfl_sync(0xffffffffu, incl - lane_total, 31);
        if (lane == 0) {
          sc.digit = d < 0 ? 0 : d;
          if (mass) sc.above += a;
        }
      }
    }
    __syncthreads();
    prefix |= static_cast<uint32_t>(sc.digit) << shift;
    mask |= 0xFFu << shift;
    __syncthreads();
  }
  return prefix;
}

__global__ void __launch_bounds__(kThreads)
    argmax_kernel(const float* __restrict__ logits, int vocab, int32_t* __restrict__ ids) {
  __shared__ Scratch sc;
  const int id = block_argmax(logits + static_cast<int64_t>(blockIdx.x) * vocab, vocab, sc);
  if (threadIdx.x == 0) ids[blockIdx.x] = id;
}

/// Inverse CDF in index order over the tokens whose key is >= floor_key (the whole row when
/// floor_key is 0): per-thread contiguous segments, a block scan of their masses, and the one
/// thread whose segment holds u * Z walks it.
__device__ int draw_in_index_order(const float* x, int vocab, float c, float xmax,
                                   uint32_t floor_key, float u, Scratch& sc) {
  const int seg = (vocab + kThreads - 1) / kThreads;
  const int begin = min(vocab, static_cast<int>(threadIdx.x) * seg), end = min(vocab, begin + seg);
  float mine = 0.f;
  int last_kept = -1;
  for (int i = begin; i < end; ++i)
    if (order_key(x[i]) >= floor_key) mine += weight(x[i], xmax, c), last_kept = i;
  float total = 0.f;
  const float before = block_exclusive_scan(mine, total, sc);
  const float target = u * total;
  if (threadIdx.x == 0) sc.chosen = -1;
  __syncthreads();
  if (last_kept >= 0 && before <= target && target < before + mine) {
    float cum = before;
    int pick = last_kept;
    for (int i = begin; i < end; ++i) {
      if (order_key(x[i]) < floor_key) continue;
      cum += weight(x[i], xmax, c);
      if (cum > target) {
        pick = i;
        break;
      }
    }
    atomicMax(&sc.chosen, pick);  // one thread normally; a tie of boundaries keeps the later
  }
  // Fallback for target == total after rounding: the last kept token of the row.
  int last = last_kept;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) last = max(last, __shfl_xor_sync(0xffffffffu, last, o));
  if ((threadIdx.x & 31) == 0) sc.i[threadIdx.x >> 5] = last;
  __syncthreads();
  int id = sc.chosen;
  if (id < 0)
    for (int w = 0; w < kWarps; ++w) id = max(id, sc.i[w]);
  __syncthreads();
  return id < 0 ? 0 : id;
}

/// Candidate order of the fast path: larger logit first, ties by lower index.
__device__ __forceinline__ bool before_in_order(float a, int ia, float b, int ib) {
  return a > b || (a == b && ia < ib);
}

/// Bitonic sort of the first `p` (a power of two) candidates into before_in_order.
__device__ void sort_candidates(const Candidates& cd, int p) {
  for (int k = 2; k <= p; k <<= 1)
    for (int j = k >> 1; j > 0; j >>= 1) {
      for (int idx = threadIdx.x; idx < p; idx += kThreads) {
        const int other = idx ^ j;
        if (other <= idx) continue;
        const float a = cd.x[idx], b = cd.x[other];
        const int ia = cd.i[idx], ib = cd.i[other];
        const bool ascending = (idx & k) == 0;
        if (ascending ? before_in_order(b, ib, a, ia) : before_in_order(a, ia, b, ib)) {
          cd.x[idx] = b, cd.x[other] = a;
          cd.i[idx] = ib, cd.i[other] = ia;
        }
      }
      __syncthreads();
    }
}

/// Largest logit of the row, kUnroll loads in flight per thread.
__device__ float row_max(const float* x, int vocab, Scratch& sc) {
  float mx = -INFINITY;
  for (int base = threadIdx.x; base < vocab; base += kUnroll * kThreads) {
    float v[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u)
      v[u] = base + u * kThreads < vocab ? x[base + u * kThreads] : -INFINITY;
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) mx = fmaxf(mx, v[u]);
  }
  return block_max(mx, sc);
}

__global__ void __launch_bounds__(kThreads)
    sample_kernel(const float* __restrict__ logits, int vocab, float temperature, int top_k,
                  float top_p, uint64_t seed, uint64_t offset,
                  const uint64_t* __restrict__ device_offset,
                  const uint64_t* __restrict__ row_seeds, int32_t* __restrict__ ids) {
  __shared__ Scratch sc;
  extern __shared__ float dynamic_smem[];
  const Candidates cd{dynamic_smem, reinterpret_cast<int*>(dynamic_smem + kCapacity),
                      dynamic_smem + 2 * kCapacity};
  const int row = blockIdx.x;
  const float* x = logits + static_cast<int64_t>(row) * vocab;
  if (!(temperature > 0.f)) {
    const int id = block_argmax(x, vocab, sc);
    if (threadIdx.x == 0) ids[row] = id;
    return;
  }
  const float c = 1.4426950408889634f / temperature;  // log2(e) / T
  const uint64_t off = offset + (device_offset != nullptr ? *device_offset : 0);
  const float u = row_seeds != nullptr ? philox_uniform(row_seeds[row], off, 0)
                                       : philox_uniform(seed, off, static_cast<uint64_t>(row));
  const float xmax = row_max(x, vocab, sc);
  const bool topk_on = top_k > 0 && top_k < vocab, topp_on = top_p < 1.0f;
  if (!topk_on && !topp_on) {
    const int id = draw_in_index_order(x, vocab, c, xmax, 0u, u, sc);
    if (threadIdx.x == 0) ids[row] = id;
    return;
  }

  // Fast path: the top_k (or, for top-p alone, the kCandidates most likely) tokens gathered
  // into shared memory, sorted, and finished there.
  const int want = topk_on ? top_k : min(kCandidates, vocab);
  const uint32_t floor_key =
      want < vocab ? radix_select(x, vocab, c, xmax, 0u, false, want, 0.f, sc) : 0u;
  if (threadIdx.x == 0) sc.cand_n = 0, sc.keep_n = 0;
  __syncthreads();
  const int lane = threadIdx.x & 31;
  const bool need_z_all = topp_on && !topk_on && want < vocab;
  float z_all = 0.f;
  for (int base = 0; base < vocab; base += kUnroll * kThreads) {  // warp-uniform trip count
    float v[kUnroll];
#pragma unroll
    for (int q = 0; q < kUnroll; ++q) {
      const int i = base + q * kThreads + threadIdx.x;
      v[q] = i < vocab ? x[i] : -INFINITY;
    }
#pragma unroll
    for (int q = 0; q < kUnroll; ++q) {
      const int i = base + q * kThreads + threadIdx.x;
      if (need_z_all && i < vocab) z_all += weight(v[q], xmax, c);
      const bool pick = i < vocab && order_key(v[q]) >= floor_key;
      const unsigned ballot = __ballot_sync(0xffffffffu, pick);
      if (ballot == 0u) continue;
      int slot = 0;
      if (lane == __ffs(ballot) - 1) slot = atomicAdd(&sc.cand_n, __popc(ballot));
      slot =
          __shfl_sync(0xffffffffu, slot, __ffs(ballot) - 1) + __popc(ballot & ((1u << lane) - 1));
      if (pick && slot < kCapacity) cd.x[slot] = v[q], cd.i[slot] = i;
    }
  }
  z_all = block_sum(z_all, sc);  // also a barrier: cand_n is final
  const int n = sc.cand_n;
  bool fast = n <= kCapacity;
  int keep = n;
  if (fast) {
    int p = 1;
    while (p < n) p <<= 1;
    for (int i = n + threadIdx.x; i < p; i += kThreads) cd.x[i] = -INFINITY, cd.i[i] = INT_MAX;
    __syncthreads();
    sort_candidates(cd, p);
    // Inclusive prefix sums of the masses in sorted order, kPerThread candidates per thread.
    const int j0 = kPerThread * threadIdx.x;
    float e[kPerThread], mine = 0.f;
#pragma unroll
    for (int q = 0; q < kPerThread; ++q) {
      e[q] = j0 + q < n ? weight(cd.x[j0 + q], xmax, c) : 0.f;
      mine += e[q];
    }
    float total = 0.f;
    float run = block_exclusive_scan(mine, total, sc);
#pragma unroll
    for (int q = 0; q < kPerThread; ++q) {
      run += e[q];
      cd.cum[j0 + q] = run;
    }
    __syncthreads();
    if (topp_on) {
      const float z_c = cd.cum[n - 1];
      const float target = top_p * (need_z_all ? z_all : z_c);
      fast = z_c >= target;  // else the top-p set reaches past the candidates
      if (fast) {
        for (int j = threadIdx.x; j < n; j += kThreads)
          if (cd.cum[j] >= target && (j == 0 || cd.cum[j - 1] < target)) sc.chosen = j;
        __syncthreads();
        const float v = cd.x[sc.chosen];  // ties with the boundary token stay in
        for (int j = threadIdx.x; j < n; j += kThreads)
          if (cd.x[j] == v) atomicMax(&sc.keep_n, j + 1);
        __syncthreads();
        keep = sc.keep_n;
      }
    }
  }
  if (fast) {
    const float target = u * cd.cum[keep - 1];
    if (threadIdx.x == 0) sc.chosen = keep - 1;  // rounding: target == total
    __syncthreads();
    for (int j = threadIdx.x; j < keep; j += kThreads)
      if (cd.cum[j] > target && (j == 0 || cd.cum[j - 1] <= target)) sc.chosen = j;
    __syncthreads();
    if (threadIdx.x == 0) ids[row] = cd.i[sc.chosen];
    return;
  }

  // Slow path (more than kCapacity tokens tie into top_k, or the top-p set is larger than
  // the candidates): thresholds by radix selection over the whole row, draw in index order.
  uint32_t floor2 = topk_on ? floor_key : 0u;
  if (topp_on) {
    float z = 0.f;
    for (int i = threadIdx.x; i < vocab; i += kThreads)
      if (order_key(x[i]) >= floor2) z += weight(x[i], xmax, c);
    z = block_sum(z, sc);
    floor2 = radix_select(x, vocab, c, xmax, floor2, true, 0, top_p * z, sc);
  }
  const int id = draw_in_index_order(x, vocab, c, xmax, floor2, u, sc);
  if (threadIdx.x == 0) ids[row] = id;
}

void check_rows(const float* logits, int rows, int vocab, const int32_t* ids, const char* op) {
  require(logits && ids, op, "logits and ids must be non-null");
  require(rows >= 0 && vocab >= 1, op,
          "need rows >= 0 and vocab >= 1, got rows=" + std::to_string(rows) +
              " vocab=" + std::to_string(vocab));
}

}  // namespace

void argmax(const float* logits, int rows, int vocab, int32_t* ids, cudaStream_t stream) {
  check_rows(logits, rows, vocab, ids, "argmax");
  if (rows == 0) return;
  argmax_kernel<<<rows, kThreads, 0, stream>>>(logits, vocab, ids);
  check_launch("argmax_kernel");
}

void sample(const float* logits, int rows, int vocab, const SamplingParams& params, int32_t* ids,
            cudaStream_t stream) {
  check_rows(logits, rows, vocab, ids, "sample");
  require(!(params.top_p <= 0.f) && !std::isnan(params.top_p), "sample",
          "top_p must be in (0, 1], got " + std::to_string(params.top_p));
  require(params.top_k >= 0, "sample", "top_k must be >= 0, got " + std::to_string(params.top_k));
  if (rows == 0) return;
  // Per device and cheap (no synchronisation), so set on every launch rather than cached.
  check_cuda(cudaFuncSetAttribute(sample_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  kCandidateSmem),
             "cudaFuncSetAttribute(sample_kernel)");
  sample_kernel<<<rows, kThreads, kCandidateSmem, stream>>>(
      logits, vocab, params.temperature, params.top_k, params.top_p, params.seed, params.offset,
      params.device_offset, params.row_seeds, ids);
  check_launch("sample_kernel");
}

}  // namespace bindery::cuda

#pragma once
// The pieces of the decode GEMV (gemv.cu) that other matrix-vector kernels reuse: the warp's
// streaming loop over k on the tensor cores, the block's sum of the k-split partials, and the
// launch shape. gemv.cu explains the design; moe.cu runs the same loop over the rows of the
// experts a token chose. Only .cu files include this.

#include <algorithm>

#include "runtime/cuda/cuda_check.h"
#include "runtime/cuda/device_util.cuh"

namespace bindery::cuda::gemv_detail {

constexpr int kWarps = 8;                   // warps per block, or k_warps when 16
constexpr int kMaxWarps = 16;               // k_warps = 16: 512 threads, one row group
constexpr int kRowsPerWarp = 8;             // mma N
constexpr int kMaxTokens = 8;               // the mma's A rows that carry tokens (0..7)
constexpr int kUnroll = 8;                  // 16-byte chunks per lane per step
constexpr int kStepCols = 4 * kUnroll * 8;  // 256 columns per warp step

/// Where a thread works: its warp's 8 rows (row0..row0+7, of which lane g = lane / 4 loads row
/// row0 + g and owns token g), the lane's column quarter t = lane % 4, and which of the
/// k_warps slices of k the warp takes. Block b covers row groups b * groups_per_block onwards.
struct WarpTile {
  int g, t, row0, kw, groups_per_block;
};
__device__ __forceinline__ WarpTile warp_tile(int k_warps, int block) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int groups_per_block = (blockDim.x >> 5) / k_warps;
  return {lane >> 2, lane & 3, (block * groups_per_block + warp / k_warps) * kRowsPerWarp,
          warp % k_warps, groups_per_block};
}

/// acc += the warp's share of x[token g] · w[row]ᵀ over k (acc[0..1]: token g, rows row0 + 2t
/// and 2t + 1; acc[2..3] belong to tokens 8..15 and stay 0). `xrow` is token g's row (zeros are
/// used when !has_token), `wrow` the weight row this lane streams; k % 8 == 0, both 16-byte
/// aligned. Call after wait_for_producers().
template <typename T>
__device__ __forceinline__ void accumulate(const T* __restrict__ xrow, bool has_token,
                                           const T* __restrict__ wrow, int k, int t, int kw,
                                           int k_warps, float (&acc)[4]) {
  const int full_steps = k / kStepCols;
  for (int s = kw; s < full_steps; s += k_warps) {
    const int base = s * kStepCols + t * 8;
    uint4 wv[kUnroll], xv[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) wv[u] = load_stream(wrow + base + u * 32);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) xv[u] = load_cached_if(xrow + base + u * 32, has_token);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      mma_16816<T>(acc, xv[u].x, 0u, xv[u].y, 0u, wv[u].x, wv[u].y);
      mma_16816<T>(acc, xv[u].z, 0u, xv[u].w, 0u, wv[u].z, wv[u].w);
    }
  }
  // Tail columns (k % 256): one predicated step, taken by the warp whose turn it is.
  if (full_steps * kStepCols < k && full_steps % k_warps == kw) {
    const int base = full_steps * kStepCols + t * 8;
    uint4 wv[kUnroll], xv[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const bool in = base + u * 32 < k;
      // Out-of-range chunks: read a valid address (the row start) and zero the x side.
      wv[u] = load_stream(wrow + (in ? base + u * 32 : 0));
      xv[u] = load_cached_if(xrow + (in ? base + u * 32 : 0), in && has_token);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      mma_16816<T>(acc, xv[u].x, 0u, xv[u].y, 0u, wv[u].x, wv[u].y);
      mma_16816<T>(acc, xv[u].z, 0u, xv[u].w, 0u, wv[u].z, wv[u].w);
    }
  }
}

/// Adds the k_warps partial sums of every row group of the block in a fixed order and calls
/// store(token, row, sum) for token < m and row < n. Every thread of the block must call it
/// (it synchronises); a caller that calls it again must __syncthreads() first.
template <typename Store>
__device__ __forceinline__ void reduce_block(const float (&acc)[4], const WarpTile& tile, int m,
                                             int n, int k_warps, int block, Store store) {
  __shared__ float partial[kMaxWarps][kMaxTokens][kRowsPerWarp];  // [warp][token][row]
  const int warp = threadIdx.x >> 5;
  partial[warp][tile.g][2 * tile.t] = acc[0];
  partial[warp][tile.g][2 * tile.t + 1] = acc[1];
  __syncthreads();
  const int outputs = tile.groups_per_block * kMaxTokens * kRowsPerWarp;
  for (int i = threadIdx.x; i < outputs; i += blockDim.x) {
    const int group = i / 64, token = (i / 8) % 8, r = i % 8;
    const int out_row = (block * tile.groups_per_block + group) * kRowsPerWarp + r;
    if (token >= m || out_row >= n) continue;
    float sum = 0.f;
    for (int j = 0; j < k_warps; ++j) sum += partial[group * k_warps + j][token][r];
    store(token, out_row, sum);
  }
}

/// 8 warps per row group measured best on an H100 for every Llama shape (shorter runs per
/// warp, x shared through L1 by fewer row groups); 16 when fewer than 16 warps per SM would
/// be busy (k/v projections); never more warps than k has steps.
inline int pick_k_warps(int n, int k) {
  const int groups = (n + kRowsPerWarp - 1) / kRowsPerWarp;
  const int steps = (k + kStepCols - 1) / kStepCols;
  int kw = groups * kWarps < 16 * multiprocessor_count() ? kMaxWarps : kWarps;
  while (kw > 1 && kw > steps) kw /= 2;
  return kw;
}

/// Threads per block and blocks over n rows for a k split of k_warps.
struct LaunchShape {
  int threads, blocks;
};
inline LaunchShape launch_shape(int n, int k_warps) {
  const int warps = std::max(kWarps, k_warps);
  const int groups_per_block = warps / k_warps;
  const int groups = (n + kRowsPerWarp - 1) / kRowsPerWarp;
  return {warps * 32, (groups + groups_per_block - 1) / groups_per_block};
}

}  // namespace bindery::cuda::gemv_detail

#pragma once
// Pieces shared by the decode and prefill attention kernels: swizzled [64 x D] shared-memory
// tiles filled by cp.async from the KV cache, the tensor-core products S = Q K^T and O += P V
// on them, and the online-softmax update. Only attention_*.cu include this.
//
// Tiles hold 64 rows (keys or queries) of D elements, 16-byte chunk c of row r stored at chunk
// c ^ (r % 8): the 8 rows one ldmatrix phase reads then sit in 8 different bank groups.

#include <cstdint>

#include "runtime/cuda/device_util.cuh"

namespace bindery::cuda::attention {

constexpr int kTileRows = 64;
constexpr float kLog2e = 1.4426950408889634f;

template <int D>
__device__ __forceinline__ int swizzle(int row, int chunk) {
  return row * D + ((chunk ^ (row & 7)) << 3);
}

/// Queues the copy of rows [first, first + 64) of a [rows, stride] matrix into a swizzled tile;
/// rows at or past `valid_rows` are zero-filled (never read), so masked keys contribute 0 and
/// never NaN from an unwritten cache line. All `threads` threads of the block take part.
template <typename T, int D>
__device__ __forceinline__ void load_tile_async(T* tile, const T* base, int64_t stride, int first,
                                                int valid_rows, int tid, int threads) {
  constexpr int kChunks = D / 8;
  for (int i = tid; i < kTileRows * kChunks; i += threads) {
    const int r = i / kChunks, c = i % kChunks;
    const int src_row = first + r;
    const bool valid = src_row < valid_rows && src_row >= 0;
    const T* src = base + (valid ? src_row : 0) * stride + c * 8;
    cp_async_16(smem_addr(tile + swizzle<D>(r, c)), src, valid);
  }
}

/// One step of the double-buffered K/V stream shared by the flash loops: queues tile it + 1 of
/// the `tiles` starting at tile_first (if there is one) into the other of the two stages, then
/// waits until tile `it` has landed and the whole block sees it.
template <typename T, int D>
__device__ __forceinline__ void stage_kv_tiles(int it, int tiles, int tile_first, T* k_tiles,
                                               T* v_tiles, const T* k_base, const T* v_base,
                                               int64_t stride, int valid_rows, int threads) {
  if (it + 1 < tiles) {
    const int st = (it + 1) % 2;
    const int first = (tile_first + it + 1) * kTileRows;
    load_tile_async<T, D>(k_tiles + st * kTileRows * D, k_base, stride, first, valid_rows,
                          threadIdx.x, threads);
    load_tile_async<T, D>(v_tiles + st * kTileRows * D, v_base, stride, first, valid_rows,
                          threadIdx.x, threads);
  }
  cp_async_commit();
  cp_async_wait<1>();
  __syncthreads();
}

/// The softmax denominators of a quad's rows: each lane held the sum over its own columns.
__device__ __forceinline__ void quad_sum(float (&l)[2]) {
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    l[h] += __shfl_xor_sync(0xffffffffu, l[h], 1);
    l[h] += __shfl_xor_sync(0xffffffffu, l[h], 2);
  }
}

/// A fragments of a 16-row slice (rows row0..row0+15) of a swizzled tile: qa[kk] covers
/// columns 16kk..16kk+15.
template <typename T, int D>
__device__ __forceinline__ void load_a_fragments(uint32_t (&qa)[D / 16][4], const T* tile, int row0,
                                                 int lane) {
  const int i = lane >> 3;
  const int row = row0 + (i & 1) * 8 + (lane & 7);
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk)
    ldmatrix_x4(qa[kk], smem_addr(tile + swizzle<D>(row, 2 * kk + (i >> 1))));
}

/// s[n] (n < NT, 8 keys each) += Q(16 rows) · K[key0 + 8n .. +7]^T over all D columns.
template <typename T, int D, int NT>
__device__ __forceinline__ void qk_tile(float (&s)[NT][4], const uint32_t (&qa)[D / 16][4],
                                        const T* k_tile, int key0, int lane) {
  const int i = lane >> 3;
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
#pragma unroll
    for (int np = 0; np < NT / 2; ++np) {
      uint32_t b[4];
      const int row = key0 + np * 16 + (i >> 1) * 8 + (lane & 7);
      ldmatrix_x4(b, smem_addr(k_tile + swizzle<D>(row, 2 * kk + (i & 1))));
      mma_16816<T>(s[2 * np], qa[kk][0], qa[kk][1], qa[kk][2], qa[kk][3], b[0], b[1]);
      mma_16816<T>(s[2 * np + 1], qa[kk][0], qa[kk][1], qa[kk][2], qa[kk][3], b[2], b[3]);
    }
  }
}

/// o[j] (dims 8j..8j+7) += P(16 rows x 8*NT keys, from s) · V[key0 ..][:]. P is rounded to T
/// for the tensor cores (as flash-attention does); the row sums use the unrounded values.
template <typename T, int D, int NT>
__device__ __forceinline__ void pv_tile(float (&o)[D / 8][4], const float (&p)[NT][4],
                                        const T* v_tile, int key0, int lane) {
  const int i = lane >> 3;
#pragma unroll
  for (int ks = 0; ks < NT / 2; ++ks) {
    const uint32_t a0 = pack2<T>(p[2 * ks][0], p[2 * ks][1]);
    const uint32_t a1 = pack2<T>(p[2 * ks][2], p[2 * ks][3]);
    const uint32_t a2 = pack2<T>(p[2 * ks + 1][0], p[2 * ks + 1][1]);
    const uint32_t a3 = pack2<T>(p[2 * ks + 1][2], p[2 * ks + 1][3]);
    const int row = key0 + ks * 16 + (i & 1) * 8 + (lane & 7);
#pragma unroll
    for (int j = 0; j < D / 16; ++j) {
      uint32_t b[4];
      ldmatrix_x4_trans(b, smem_addr(v_tile + swizzle<D>(row, 2 * j + (i >> 1))));
      mma_16816<T>(o[2 * j], a0, a1, a2, a3, b[0], b[1]);
      mma_16816<T>(o[2 * j + 1], a0, a1, a2, a3, b[2], b[3]);
    }
  }
}

/// Online softmax over one tile for the thread's two rows (g: elements 0,1; g+8: elements 2,3).
/// s holds scaled scores in log2 units with masked entries at -inf and is overwritten by
/// p = 2^(s - m_new); m, l (per-thread partial sums) and o are rescaled. The four lanes of a
/// row agree on m after the shuffles, so l can stay a per-lane partial until the end.
template <int D, int NT>
__device__ __forceinline__ void online_softmax(float (&s)[NT][4], float (&m)[2], float (&l)[2],
                                               float (&o)[D / 8][4]) {
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    float mx = m[h];
#pragma unroll
    for (int n = 0; n < NT; ++n) mx = fmaxf(mx, fmaxf(s[n][2 * h], s[n][2 * h + 1]));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    // A row with no visible key yet keeps m = -inf; subtract 0 instead so that 2^(-inf) = 0
    // rather than NaN.
    const float base = mx == -INFINITY ? 0.f : mx;
    const float alpha = fast_exp2(m[h] - base);
    m[h] = mx;
    float sum = 0.f;
#pragma unroll
    for (int n = 0; n < NT; ++n) {
      s[n][2 * h] = fast_exp2(s[n][2 * h] - base);
      s[n][2 * h + 1] = fast_exp2(s[n][2 * h + 1] - base);
      sum += s[n][2 * h] + s[n][2 * h + 1];
    }
    l[h] = l[h] * alpha + sum;
#pragma unroll
    for (int j = 0; j < D / 8; ++j) {
      o[j][2 * h] *= alpha;
      o[j][2 * h + 1] *= alpha;
    }
  }
}

}  // namespace bindery::cuda::attention

// Decode matmul y[m, n] = x[m, k] · W[n, k]^T (+ bias) for m <= 8 tokens.
//
// At decode the weights are read once per token, so the kernel's time is W's bytes over HBM
// bandwidth and nothing else may get in the way. What makes that hold:
// - W is streamed with 16-byte loads that bypass L1 (load_stream), 8 of them in flight per
//   thread before the first use, several blocks per SM: ~64-96 KB in flight per SM, well over
//   the latency-bandwidth product (~25 KB/SM on an H100).
// - The multiply runs on the tensor cores (mma.m16n8k16) with the tokens as the 16-row A
//   operand (rows m..15 are zero) and 8 weight rows as B. A dot product may visit k in any
//   order as long as both operands agree, so each lane feeds the mma straight from its own
//   16-byte loads (k permuted within a chunk) instead of shuffling into the canonical layout:
//   one 16-byte W load + one 16-byte x load = two mma, no shared memory, no conversions. The
//   CUDA cores would need 8 conversions + 8 FMA per weight at m = 8, more than the SM issues.
// - A warp covers 8 rows × (4 lanes × 8 chunks × 8 elements = 256) columns per step: each row
//   is read as 512 contiguous bytes. The warps of a block split k (k_warps of them per row
//   group, up to 16) and add their partials through shared memory, so small n still fills
//   the machine.

#include <algorithm>
#include <string>

#include "runtime/cuda/cuda_check.h"
#include "runtime/cuda/device_util.cuh"
#include "runtime/cuda/kernels.h"
#include "runtime/cuda/launch.cuh"

namespace bindery::cuda {
namespace {

constexpr int kWarps = 8;                   // warps per block, or k_warps when 16
constexpr int kMaxWarps = 16;               // k_warps = 16: 512 threads, one row group
constexpr int kRowsPerWarp = 8;             // mma N
constexpr int kUnroll = 8;                  // 16-byte chunks per lane per step
constexpr int kStepCols = 4 * kUnroll * 8;  // 256 columns per warp step

template <typename T, typename TOut>
__global__ void __launch_bounds__(kMaxWarps * 32)
    gemv_kernel(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ bias,
                TOut* __restrict__ y, int m, int n, int k, int k_warps) {
  __shared__ float partial[kMaxWarps][8][kRowsPerWarp];  // [warp][token][row]
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, t = lane & 3;
  const int groups_per_block = (blockDim.x >> 5) / k_warps;
  const int row0 = (blockIdx.x * groups_per_block + warp / k_warps) * kRowsPerWarp;
  const int kw = warp % k_warps;
  // Rows past n read row n-1 (valid memory, result dropped): no predicates in the hot loop.
  const int row = min(row0 + g, n - 1);
  const T* wrow = w + static_cast<int64_t>(max(row, 0)) * k;
  const bool has_token = g < m;
  const T* xrow = x + static_cast<int64_t>(has_token ? g : 0) * k;

  float acc[4] = {0.f, 0.f, 0.f, 0.f};
  const int full_steps = k / kStepCols;
  // Under programmatic launch the blocks may start before the kernel that writes x ends. (Loading
  // the first weights before this wait measured slower: the peeled loop costs more than the
  // latency it hides.)
  wait_for_producers();
  allow_dependents();
  if (row0 < n) {
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
  // acc[0..1] = y[token g][rows row0 + 2t, 2t+1] for this warp's share of k; acc[2..3] belong
  // to tokens 8..15, which do not exist.
  partial[warp][g][2 * t] = acc[0];
  partial[warp][g][2 * t + 1] = acc[1];
  __syncthreads();
  const int outputs = groups_per_block * 8 * kRowsPerWarp;
  for (int i = threadIdx.x; i < outputs; i += blockDim.x) {
    const int group = i / 64, token = (i / 8) % 8, r = i % 8;
    const int out_row = (blockIdx.x * groups_per_block + group) * kRowsPerWarp + r;
    if (token >= m || out_row >= n) continue;
    float sum = 0.f;
    for (int j = 0; j < k_warps; ++j) sum += partial[group * k_warps + j][token][r];
    if (bias != nullptr) sum += to_float(bias[out_row]);
    y[static_cast<int64_t>(token) * n + out_row] = from_float<TOut>(sum);
  }
}

/// 8 warps per row group measured best on an H100 for every Llama shape (shorter runs per
/// warp, x shared through L1 by fewer row groups); 16 when fewer than 16 warps per SM would
/// be busy (k/v projections); never more warps than k has steps.
int pick_k_warps(int n, int k) {
  const int groups = (n + kRowsPerWarp - 1) / kRowsPerWarp;
  const int steps = (k + kStepCols - 1) / kStepCols;
  int kw = groups * kWarps < 16 * multiprocessor_count() ? kMaxWarps : kWarps;
  while (kw > 1 && kw > steps) kw /= 2;
  return kw;
}

template <typename T, typename TOut>
void launch(const void* x, const void* w, const void* bias, void* y, int m, int n, int k,
            int k_warps, cudaStream_t stream) {
  const int warps = std::max(kWarps, k_warps);
  const int groups_per_block = warps / k_warps;
  const int groups = (n + kRowsPerWarp - 1) / kRowsPerWarp;
  const int blocks = (groups + groups_per_block - 1) / groups_per_block;
  launch_kernel("gemv_kernel", gemv_kernel<T, TOut>, blocks, warps * 32, 0, stream,
                static_cast<const T*>(x), static_cast<const T*>(w), static_cast<const T*>(bias),
                static_cast<TOut*>(y), m, n, k, k_warps);
}

}  // namespace

void gemv(DataType dtype, const void* x, const void* w, const void* bias, DataType y_dtype, void* y,
          int m, int n, int k, cudaStream_t stream, int k_warps) {
  require_half_dtype(dtype, "gemv");
  if (y_dtype != dtype && y_dtype != DataType::kFLOAT)
    throw Error(ErrorCode::kDTYPE_MISMATCH, "gemv: y dtype must be " +
                                                std::string(dtype_name(dtype)) + " or f32, got " +
                                                std::string(dtype_name(y_dtype)));
  require(m >= 1 && m <= 8, "gemv", "m (tokens) must be in 1..8, got " + std::to_string(m));
  require(n >= 1 && k >= 8 && k % 8 == 0, "gemv",
          "need n >= 1 and k a positive multiple of 8, got n=" + std::to_string(n) +
              " k=" + std::to_string(k));
  require(x != nullptr && w != nullptr && y != nullptr, "gemv", "x, w and y must be non-null");
  require(aligned16(x) && aligned16(w), "gemv", "x and w must be 16-byte aligned");
  require(
      k_warps == 0 || k_warps == 1 || k_warps == 2 || k_warps == 4 || k_warps == 8 || k_warps == 16,
      "gemv", "k_warps must be 0, 1, 2, 4, 8 or 16, got " + std::to_string(k_warps));
  if (k_warps == 0) k_warps = pick_k_warps(n, k);
  const bool f32_out = y_dtype == DataType::kFLOAT;
  if (dtype == DataType::kBF16) {
    if (f32_out)
      launch<bf16, float>(x, w, bias, y, m, n, k, k_warps, stream);
    else
      launch<bf16, bf16>(x, w, bias, y, m, n, k, k_warps, stream);
  } else {
    if (f32_out)
      launch<fp16, float>(x, w, bias, y, m, n, k, k_warps, stream);
    else
      launch<fp16, fp16>(x, w, bias, y, m, n, k, k_warps, stream);
  }
}

}  // namespace bindery::cuda

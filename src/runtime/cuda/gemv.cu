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
// The warp loop, the block's sum of the k-split partials and the launch shape live in
// gemv_common.cuh, which moe.cu's expert GEMV shares.

#include <algorithm>
#include <string>

#include "runtime/cuda/cuda_check.h"
#include "runtime/cuda/device_util.cuh"
#include "runtime/cuda/gemv_common.cuh"
#include "runtime/cuda/kernels.h"
#include "runtime/cuda/launch.cuh"

namespace bindery::cuda {
namespace {

using namespace gemv_detail;

template <typename T, typename TOut>
__global__ void __launch_bounds__(kMaxWarps * 32)
    gemv_kernel(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ bias,
                TOut* __restrict__ y, int m, int n, int k, int k_warps) {
  const WarpTile tile = warp_tile(k_warps, blockIdx.x);
  // Rows past n read row n-1 (valid memory, result dropped): no predicates in the hot loop.
  const int row = min(tile.row0 + tile.g, n - 1);
  const T* wrow = w + static_cast<int64_t>(max(row, 0)) * k;
  const bool has_token = tile.g < m;
  const T* xrow = x + static_cast<int64_t>(has_token ? tile.g : 0) * k;

  float acc[4] = {0.f, 0.f, 0.f, 0.f};
  // Under programmatic launch the blocks may start before the kernel that writes x ends. (Loading
  // the first weights before this wait measured slower: the peeled loop costs more than the
  // latency it hides; so did asking them into L2 with prefetch.global.L2, see
  // docs/cuda-decode-notes.md.)
  wait_for_producers();
  allow_dependents();
  if (tile.row0 < n) accumulate<T>(xrow, has_token, wrow, k, tile.t, tile.kw, k_warps, acc);
  reduce_block(acc, tile, m, n, k_warps, blockIdx.x, [&](int token, int out_row, float sum) {
    if (bias != nullptr) sum += to_float(bias[out_row]);
    y[static_cast<int64_t>(token) * n + out_row] = from_float<TOut>(sum);
  });
}

template <typename T, typename TOut>
void launch(const void* x, const void* w, const void* bias, void* y, int m, int n, int k,
            int k_warps, cudaStream_t stream) {
  const LaunchShape shape = launch_shape(n, k_warps);
  launch_kernel("gemv_kernel", gemv_kernel<T, TOut>, shape.blocks, shape.threads, 0, stream,
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

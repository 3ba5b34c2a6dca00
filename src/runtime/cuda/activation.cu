// SiLU·mul over the fused gate|up projection: out[t, f] = silu(gu[t, f]) * gu[t, F + f].
// Pure streaming, 16-byte vectors, a grid-stride loop sized to fill the SMs. Rounding follows
// transformers: silu in fp32 (x / (1 + exp(-x)), accurate expf) rounded to the element type,
// then the product rounded.

#include <algorithm>
#include <string>

#include "runtime/cuda/cuda_check.h"
#include "runtime/cuda/device_util.cuh"
#include "runtime/cuda/kernels.h"
#include "runtime/cuda/launch.cuh"

namespace bindery::cuda {
namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void __launch_bounds__(kThreads)
    silu_mul_kernel(const T* __restrict__ gate_up, T* __restrict__ out, int64_t rows, int ffn) {
  wait_for_producers();
  allow_dependents();
  const int chunks = ffn / 8;
  const int64_t total = rows * chunks;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / chunks;
    const int c = static_cast<int>(i % chunks);
    const T* row = gate_up + r * 2 * ffn;
    float g[8], u[8];
    unpack8<T>(load_cached(row + c * 8), g);
    unpack8<T>(load_cached(row + ffn + c * 8), u);
#pragma unroll
    for (int j = 0; j < 8; ++j) g[j] = round_to<T>(g[j] / (1.0f + expf(-g[j]))) * u[j];
    reinterpret_cast<uint4*>(out + r * ffn)[c] = pack8<T>(g);
  }
}

template <typename T>
void launch(const void* gate_up, void* out, int rows, int ffn, cudaStream_t stream) {
  const int64_t total = static_cast<int64_t>(rows) * (ffn / 8);
  const int64_t want = (total + kThreads - 1) / kThreads;
  const int blocks = static_cast<int>(std::min<int64_t>(want, 8LL * multiprocessor_count()));
  launch_kernel("silu_mul_kernel", silu_mul_kernel<T>, blocks, kThreads, 0, stream,
                static_cast<const T*>(gate_up), static_cast<T*>(out), static_cast<int64_t>(rows),
                ffn);
}

}  // namespace

void silu_mul(DataType dtype, const void* gate_up, void* out, int rows, int ffn,
              cudaStream_t stream) {
  require_half_dtype(dtype, "silu_mul");
  require(rows >= 0 && ffn >= 8 && ffn % 8 == 0, "silu_mul",
          "ffn must be a positive multiple of 8, got " + std::to_string(ffn));
  require(gate_up && out, "silu_mul", "gate_up and out must be non-null");
  require(aligned16(gate_up) && aligned16(out), "silu_mul",
          "gate_up and out must be 16-byte aligned");
  if (rows == 0) return;
  if (dtype == DataType::kBF16)
    launch<bf16>(gate_up, out, rows, ffn, stream);
  else
    launch<fp16>(gate_up, out, rows, ffn, stream);
}

}  // namespace bindery::cuda

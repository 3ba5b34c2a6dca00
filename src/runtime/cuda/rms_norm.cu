// RMSNorm with an optional fused residual add: one block per row.
//
// A row is a few KB, so the kernel is latency-bound at decode (one row) and bandwidth-bound at
// prefill; either way it must touch each element once from DRAM. Pass one adds the residual
// (rounded to the element type, as transformers' bf16 add does), writes it back and sums
// squares in fp32; pass two re-reads the same 16-byte chunks the same thread just wrote (L1/L2
// hits) and scales them. Rounding follows LlamaRMSNorm: normalize in fp32, round, then multiply
// by the weight and round again.

#include <algorithm>
#include <string>

#include "runtime/cuda/cuda_check.h"
#include "runtime/cuda/device_util.cuh"
#include "runtime/cuda/kernels.h"
#include "runtime/cuda/launch.cuh"

namespace bindery::cuda {
namespace {

__device__ __forceinline__ float block_sum(float v, float* scratch) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  const int warps = (blockDim.x + 31) >> 5;
  float s = 0.f;
  for (int i = 0; i < warps; ++i) s += scratch[i];  // same order in every thread
  return s;
}

template <typename T>
__global__ void rms_norm_kernel(const T* __restrict__ x, T* __restrict__ residual,
                                const T* __restrict__ weight, T* __restrict__ out, int hidden,
                                float eps) {
  __shared__ float scratch[32];
  const int64_t row = blockIdx.x;
  const int chunks = hidden / 8;
  const uint4* wr = reinterpret_cast<const uint4*>(weight);
  // Rows of up to one chunk per thread (every Llama size up to 8192) keep their chunk in
  // registers between the two passes, with its weight loaded before the wait for x: one
  // dependent round trip to memory fewer on a kernel that is all latency at decode.
  const bool one_chunk = chunks <= static_cast<int>(blockDim.x);
  const int c0 = threadIdx.x;
  uint4 w0 = make_uint4(0, 0, 0, 0);
  if (one_chunk && c0 < chunks) w0 = load_cached(wr + c0);
  wait_for_producers();
  allow_dependents();
  const uint4* xr = reinterpret_cast<const uint4*>(x + row * hidden);
  uint4* rr = residual ? reinterpret_cast<uint4*>(residual + row * hidden) : nullptr;
  uint4* orow = reinterpret_cast<uint4*>(out + row * hidden);
  const auto load_row = [&](int c, float(&v)[8]) {
    unpack8<T>(xr[c], v);
    if (rr) {
      float r[8];
      unpack8<T>(rr[c], r);
#pragma unroll
      for (int i = 0; i < 8; ++i) v[i] = round_to<T>(v[i] + r[i]);
      rr[c] = pack8<T>(v);
    }
  };
  const auto scale = [&](float(&v)[8], const uint4& w, float inv) {
    float wv[8];
    unpack8<T>(w, wv);
#pragma unroll
    for (int i = 0; i < 8; ++i) v[i] = wv[i] * round_to<T>(v[i] * inv);
    return pack8<T>(v);
  };
  float sumsq = 0.f;
  if (one_chunk) {
    float v[8] = {};
    if (c0 < chunks) load_row(c0, v);
#pragma unroll
    for (int i = 0; i < 8; ++i) sumsq += v[i] * v[i];
    const float inv = rsqrtf(block_sum(sumsq, scratch) / static_cast<float>(hidden) + eps);
    if (c0 < chunks) orow[c0] = scale(v, w0, inv);
    return;
  }
  for (int c = threadIdx.x; c < chunks; c += blockDim.x) {
    float v[8];
    load_row(c, v);
#pragma unroll
    for (int i = 0; i < 8; ++i) sumsq += v[i] * v[i];
  }
  const float inv = rsqrtf(block_sum(sumsq, scratch) / static_cast<float>(hidden) + eps);
  const uint4* src = rr ? rr : xr;
  for (int c = threadIdx.x; c < chunks; c += blockDim.x) {
    float v[8];
    unpack8<T>(src[c], v);
    orow[c] = scale(v, wr[c], inv);
  }
}

template <typename T>
void launch(const void* x, void* residual, const void* weight, void* out, int rows, int hidden,
            float eps, cudaStream_t stream) {
  // About one 16-byte chunk per thread up to 8192 elements; whole warps.
  const int threads = std::min(1024, std::max(32, (hidden / 8 + 31) / 32 * 32));
  launch_kernel("rms_norm_kernel", rms_norm_kernel<T>, rows, threads, 0, stream,
                static_cast<const T*>(x), static_cast<T*>(residual), static_cast<const T*>(weight),
                static_cast<T*>(out), hidden, eps);
}

}  // namespace

void rms_norm(DataType dtype, const void* x, void* residual, const void* weight, void* out,
              int rows, int hidden, float eps, cudaStream_t stream) {
  require_half_dtype(dtype, "rms_norm");
  require(rows >= 0 && hidden >= 8 && hidden % 8 == 0, "rms_norm",
          "hidden must be a positive multiple of 8, got " + std::to_string(hidden));
  require(x && weight && out, "rms_norm", "x, weight and out must be non-null");
  require(aligned16(x) && aligned16(weight) && aligned16(out) && (!residual || aligned16(residual)),
          "rms_norm", "x, residual, weight and out must be 16-byte aligned");
  require(out != x && out != residual, "rms_norm", "out must not alias x or residual");
  if (rows == 0) return;
  if (dtype == DataType::kBF16)
    launch<bf16>(x, residual, weight, out, rows, hidden, eps, stream);
  else
    launch<fp16>(x, residual, weight, out, rows, hidden, eps, stream);
}

}  // namespace bindery::cuda

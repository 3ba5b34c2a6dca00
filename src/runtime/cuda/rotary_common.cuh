#pragma once
// Rotary embedding pieces shared by the rotary kernel and the fused rotary + KV-cache append:
// a token's cos/sin table in shared memory and the rotation of one 16-byte chunk pair, with
// transformers' rounding (see rotary.cu). Only .cu files include this.

#include "runtime/cuda/device_util.cuh"

namespace bindery::cuda::rotary {

constexpr int kMaxHalfDim = 256;  // head_dim <= 512

/// cos_s/sin_s[i] = round(cos/sin(position * inv_freq[i]) * scaling) for i < half, by the
/// whole block; the caller synchronises before reading them. sincosf with full range
/// reduction: angles reach 1e5 rad at long context, where the fast __sinf is wrong.
template <typename T>
__device__ __forceinline__ void fill_cos_sin(float position, const float* __restrict__ inv_freq,
                                             float scaling, int half, float* cos_s, float* sin_s) {
  for (int i = threadIdx.x; i < half; i += blockDim.x) {
    float s, c;
    sincosf(position * inv_freq[i], &s, &c);
    cos_s[i] = round_to<T>(c * scaling);
    sin_s[i] = round_to<T>(s * scaling);
  }
}

/// Rotates elements [8c, 8c+8) and [half + 8c, half + 8c + 8) of the head at `src` into `dst`
/// (which may be `src`).
template <typename T>
__device__ __forceinline__ void rotate_chunk(const T* src, T* dst, int c, int half,
                                             const float* cos_s, const float* sin_s) {
  float lo[8], hi[8], out_lo[8], out_hi[8];
  unpack8<T>(*reinterpret_cast<const uint4*>(src + c * 8), lo);
  unpack8<T>(*reinterpret_cast<const uint4*>(src + half + c * 8), hi);
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    const float cs = cos_s[c * 8 + j], sn = sin_s[c * 8 + j];
    out_lo[j] = round_to<T>(lo[j] * cs) + round_to<T>(-hi[j] * sn);
    out_hi[j] = round_to<T>(hi[j] * cs) + round_to<T>(lo[j] * sn);
  }
  *reinterpret_cast<uint4*>(dst + c * 8) = pack8<T>(out_lo);
  *reinterpret_cast<uint4*>(dst + half + c * 8) = pack8<T>(out_hi);
}

}  // namespace bindery::cuda::rotary

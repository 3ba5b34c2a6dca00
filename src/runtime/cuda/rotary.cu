// Rotary position embedding in place, Hugging Face layout (rotate_half): for i < D/2,
//   out[i]       = q[i] * cos_i - q[i + D/2] * sin_i
//   out[i + D/2] = q[i + D/2] * cos_i + q[i] * sin_i
// with angle_i = float(position) * inv_freq[i] in fp32 and cos/sin scaled by the attention
// scaling, then rounded to the element type, and each product and the sum rounded as
// transformers' element-wise bf16/fp16 ops round them. One block per token: its D/2 cos/sin
// pairs are computed once (rotary_common.cuh) and shared by all of the token's q and k heads.

#include <string>

#include "runtime/cuda/cuda_check.h"
#include "runtime/cuda/kernels.h"
#include "runtime/cuda/launch.cuh"
#include "runtime/cuda/rotary_common.cuh"

namespace bindery::cuda {
namespace {

constexpr int kThreads = 128;
using rotary::kMaxHalfDim;

template <typename T>
__global__ void __launch_bounds__(kThreads)
    rotary_kernel(T* __restrict__ q, T* __restrict__ k, const int32_t* __restrict__ positions,
                  const float* __restrict__ inv_freq, float scaling, int hq, int hkv, int d) {
  __shared__ float cos_s[kMaxHalfDim], sin_s[kMaxHalfDim];
  wait_for_producers();
  allow_dependents();
  const int64_t tok = blockIdx.x;
  const int half = d / 2;
  rotary::fill_cos_sin<T>(static_cast<float>(positions[tok]), inv_freq, scaling, half, cos_s,
                          sin_s);
  __syncthreads();
  const int chunks = half / 8;
  const int heads = hq + (k ? hkv : 0);
  for (int i = threadIdx.x; i < heads * chunks; i += blockDim.x) {
    const int h = i / chunks, c = i % chunks;
    T* head = h < hq ? q + (tok * hq + h) * d : k + (tok * hkv + (h - hq)) * d;
    rotary::rotate_chunk<T>(head, head, c, half, cos_s, sin_s);
  }
}

template <typename T>
void launch(void* q, void* k, const int32_t* positions, const float* inv_freq, float scaling,
            int tokens, int hq, int hkv, int d, cudaStream_t stream) {
  launch_kernel("rotary_kernel", rotary_kernel<T>, tokens, kThreads, 0, stream, static_cast<T*>(q),
                static_cast<T*>(k), positions, inv_freq, scaling, hq, hkv, d);
}

}  // namespace

void rotary_embedding(DataType dtype, void* q, void* k, const int32_t* positions,
                      const float* inv_freq, float attention_scaling, int tokens, int num_q_heads,
                      int num_kv_heads, int head_dim, cudaStream_t stream) {
  require_half_dtype(dtype, "rotary_embedding");
  require(head_dim >= 16 && head_dim % 16 == 0 && head_dim / 2 <= kMaxHalfDim, "rotary_embedding",
          "head_dim must be a multiple of 16 in 16..512, got " + std::to_string(head_dim));
  require(tokens >= 0 && num_q_heads >= 1 && (k == nullptr || num_kv_heads >= 1),
          "rotary_embedding", "need tokens >= 0 and at least one q (and k) head");
  require(q && positions && inv_freq, "rotary_embedding",
          "q, positions and inv_freq must be non-null");
  require(aligned16(q) && (!k || aligned16(k)), "rotary_embedding",
          "q and k must be 16-byte aligned");
  if (tokens == 0) return;
  if (dtype == DataType::kBF16)
    launch<bf16>(q, k, positions, inv_freq, attention_scaling, tokens, num_q_heads, num_kv_heads,
                 head_dim, stream);
  else
    launch<fp16>(q, k, positions, inv_freq, attention_scaling, tokens, num_q_heads, num_kv_heads,
                 head_dim, stream);
}

}  // namespace bindery::cuda

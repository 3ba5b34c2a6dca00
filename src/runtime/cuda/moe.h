#pragma once
// bindery::cuda — the sparse mixture-of-experts layer (kMOE: Mixtral's MLP) on the GPU.
// Conventions of kernels.h: device pointers owned by the caller, work queued on `stream`,
// bf16/f16 data with fp32 arithmetic, bad arguments throw Error naming them. Unlike the
// kernels there, the kGEMM path synchronises `stream` once and calls cuBLAS.

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "bindery/dtype.h"

namespace bindery::cuda {

/// The most experts a layer may have (routing keeps a token's probabilities in registers and
/// local memory).
constexpr int kMoeMaxExperts = 256;
/// kAUTO's bound on tokens * top_k for the kGEMV path.
constexpr int kMoeGemvMaxPairs = 64;

/// One run of a kMOE layer. Each expert's weights are rows of two stacked matrices in `dtype`:
/// gate_up [E * 2F, H] (expert e's gate rows [e*2F, e*2F + F), its up rows the next F) and
/// down [E * H, F] (expert e's rows [e*H, (e+1)*H)).
struct MoeShape {
  int tokens = 0;               // T
  int hidden = 0;               // H, a multiple of 8
  int ffn = 0;                  // F, each expert's intermediate size, a multiple of 8
  int num_experts = 1;          // E, 1..kMoeMaxExperts
  int top_k = 1;                // experts per token, 1..E
  bool normalize_top_k = true;  // the chosen probabilities are divided by their sum
};

/// How moe() runs the experts.
enum class MoePath {
  kAUTO,  // kGEMV for up to kMoeGemvMaxPairs token-expert pairs, kGEMM above
  kGEMV,  // on the device alone (a CUDA graph may capture it): each chosen expert's rows are
          // streamed once per 8 of its tokens; experts no token chose are not read
  kGEMM,  // each expert's token count is copied to the host (one synchronisation of `stream`),
          // its tokens gathered and run through cuBLAS (prefill)
};

/// Routes `tokens` tokens: softmax of each row of logits [tokens, num_experts] (f32, bf16 or
/// f16) in fp32, its top_k probabilities chosen exactly as the CPU kernel and torch.topk on the
/// CPU choose them (libstdc++'s selection with NaN above every number, so tied probabilities go
/// to the same experts), renormalised to sum to 1 when `normalize_top_k`. Writes experts
/// [tokens, top_k] (the largest probability first) and their weights [tokens, top_k].
void moe_route(DataType logits_dtype, const void* logits, int tokens, int num_experts, int top_k,
               bool normalize_top_k, int32_t* experts, float* weights, cudaStream_t stream);

/// Scratch bytes moe() needs for `shape` on `path`.
size_t moe_workspace_bytes(DataType dtype, const MoeShape& shape, MoePath path);

/// y[T, H] = sum over each token's top_k experts e of weight_e * down_e(silu(gate_e x) * up_e x),
/// with x [T, H] and router_logits [T, E] in `dtype`, y in `dtype`. Rounds where transformers
/// does for a bf16/f16 model: each projection's output, silu, silu * up, and each expert's
/// weighted output, then adds the experts' outputs to y in increasing expert order, rounding
/// after each (index_add_ into a bf16 tensor). The kGEMV path gives a token the same bits alone
/// or beside others. `workspace` holds moe_workspace_bytes(dtype, shape, path) bytes; one call
/// at a time per workspace. `cublas` serves the kGEMM path (which binds it to `stream`) and may
/// be null where the path is or resolves to kGEMV. kGEMM on a stream being captured throws
/// Error(kINVALID_ARGUMENT) before anything is queued.
void moe(DataType dtype, const MoeShape& shape, const void* x, const void* router_logits,
         const void* gate_up, const void* down, void* y, void* workspace, size_t workspace_bytes,
         MoePath path, cublasHandle_t cublas, cudaStream_t stream);

}  // namespace bindery::cuda

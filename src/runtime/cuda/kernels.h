#pragma once
// bindery::cuda — the CUDA kernels of the Llama decode and prefill path (internal header).
//
// Conventions shared by every entry point:
// - Every pointer is device memory, owned by the caller, and must stay valid until the work
//   queued on `stream` has run. Nothing here allocates device memory; where a kernel needs
//   scratch space the caller passes a workspace whose size a *_workspace_bytes() call gives.
// - Work is queued on `stream` and never synchronised: the host wrappers return at once.
// - `dtype` is the element type of weights and activations: DataType::kBF16 or kHALF.
//   Arithmetic is fp32 (accumulators, norms, softmax), rounding to `dtype` where the Hugging
//   Face reference rounds, so outputs match transformers bit for bit in most elements.
// - Tensors are dense, row-major, rows contiguous. Vectorised kernels need 16-byte aligned
//   pointers and inner sizes that are multiples of 8 elements (checked).
// - Bad arguments (shapes, dtypes, alignment) throw Error(kINVALID_ARGUMENT / kDTYPE_MISMATCH)
//   naming the argument; a failed launch throws Error(kDEVICE). Errors that only the device
//   can see (an out-of-range token id) raise a device-side flag instead of trapping.
// - Thread safety: the functions hold no state except a per-device cache of the multiprocessor
//   count and kernel attributes, filled on first use (thread-safe).

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "bindery/dtype.h"

namespace bindery::cuda {

// ---------------------------------------------------------------------------------------------
// Matmul for decode (GEMV-shaped)

/// y[m, n] = x[m, k] · w[n, k]^T (+ bias[n]), w row-major as in a PyTorch Linear. x, w and bias
/// are `dtype`; y is `dtype` or kFLOAT (logits). 1 <= m <= 8, k % 8 == 0, x and w 16-byte
/// aligned. Streams w once through the tensor cores (x rides along as the small operand), so
/// its time is w's bytes over HBM bandwidth. `k_warps` (0 = heuristic, else 1, 2, 4, 8, 16)
/// splits k over the warps of a block; benchmarks sweep it.
void gemv(DataType dtype, const void* x, const void* w, const void* bias, DataType y_dtype, void* y,
          int m, int n, int k, cudaStream_t stream, int k_warps = 0);

// ---------------------------------------------------------------------------------------------
// Element-wise and row-wise ops

/// out[r] = weight * normalize(x[r]) over `hidden` elements, rows = `rows`, eps inside the
/// square root. With `residual` non-null: h = x + residual (rounded to dtype), residual = h
/// (in place), out = weight * normalize(h) — the fused "add & norm" of a decoder layer.
/// `out` may not alias x or residual. hidden % 8 == 0.
void rms_norm(DataType dtype, const void* x, void* residual, const void* weight, void* out,
              int rows, int hidden, float eps, cudaStream_t stream);

/// Rotary position embedding in place, Hugging Face's half-rotation layout (rotate_half):
/// q[t, Hq*D] and k[t, Hkv*D] (k may be null), angle = positions[t] * inv_freq[i] in fp32,
/// cos/sin scaled by `attention_scaling` and rounded to dtype as transformers does.
/// inv_freq has head_dim/2 fp32 entries; head_dim % 16 == 0.
void rotary_embedding(DataType dtype, void* q, void* k, const int32_t* positions,
                      const float* inv_freq, float attention_scaling, int tokens, int num_q_heads,
                      int num_kv_heads, int head_dim, cudaStream_t stream);

/// out[t, f] = silu(gate_up[t, f]) * gate_up[t, ffn + f] for f < ffn (fused gate|up layout).
/// ffn % 8 == 0.
void silu_mul(DataType dtype, const void* gate_up, void* out, int rows, int ffn,
              cudaStream_t stream);

/// out[t, :] = table[ids[t], :] for t < tokens. An id outside [0, vocab) writes a zero row and
/// sets *error_flag to 1 (when error_flag is non-null); the caller reads the flag when it next
/// synchronises. `dtype` may be any 2-byte type; hidden % 8 == 0.
void embedding_gather(DataType dtype, const int32_t* ids, const void* table, int vocab, int hidden,
                      void* out, int tokens, int* error_flag, cudaStream_t stream);

// ---------------------------------------------------------------------------------------------
// KV cache and attention

/// One layer's KV cache: k and v each [num_slots, max_seq_len, num_kv_heads, head_dim].
struct KvCacheView {
  void* k = nullptr;
  void* v = nullptr;
  DataType dtype = DataType::kBF16;
  int num_slots = 0;
  int max_seq_len = 0;
  int num_kv_heads = 0;
  int head_dim = 0;  // 64 or 128
};

/// The sequences of one step. Sequence b owns cache slot slots[b]; after this step its cache
/// holds context_lens[b] tokens, the last n_b of which are this step's new tokens (positions
/// context_lens[b]-n_b .. context_lens[b]-1). Its new tokens are rows cu_seqlens[b] ..
/// cu_seqlens[b+1]-1 of the packed q/k/v/out tensors; cu_seqlens null means one new token
/// per sequence (decode: row b). Device arrays; the two bounds are host-side and size grids.
struct SeqBatchView {
  int num_seqs = 0;
  const int32_t* cu_seqlens = nullptr;    // [num_seqs + 1] or null
  const int32_t* slots = nullptr;         // [num_seqs]
  const int32_t* context_lens = nullptr;  // [num_seqs]
  int max_context_len = 0;  // >= every context_lens[b] (decode splits the cache by it)
  int max_new_tokens = 1;   // >= every n_b (prefill tiles the queries by it)
};

/// Writes this step's k and v rows ([tokens, Hkv, D] each) into the cache at their positions.
/// Rows whose slot or position falls outside the cache are skipped (never written out of
/// bounds).
void kv_cache_append(const void* k, const void* v, int tokens, const SeqBatchView& batch,
                     const KvCacheView& cache, cudaStream_t stream);

/// kv_cache_append with the rotary embedding of rotary_embedding first: q [tokens, Hq, D] is
/// rotated into q_out (which may be q), and k [tokens, Hkv, D] is rotated on its way into the
/// cache (k itself is not changed); v is copied. The cache's dtype (bf16 or f16) and head_dim
/// are those of q and k. Rows whose slot or position falls outside the cache are not written
/// to the cache; their q is still rotated.
void rope_kv_append(const void* q, void* q_out, const void* k, const void* v,
                    const int32_t* positions, const float* inv_freq, float attention_scaling,
                    int tokens, int num_q_heads, const SeqBatchView& batch,
                    const KvCacheView& cache, cudaStream_t stream);

/// Scratch bytes decode_attention needs for these sizes (0 when one split suffices).
size_t decode_attention_workspace_bytes(int num_seqs, int num_q_heads, int num_kv_heads,
                                        int head_dim, int max_context_len);

/// Decode attention: one new query per sequence, q [num_seqs, Hq, D] (after rotary), reading
/// keys/values 0..context_lens[b]-1 from the cache (append this step's k/v first), causal,
/// scale 1/sqrt(D), GQA (Hq % Hkv == 0, Hq/Hkv <= 16), optional sliding window (a key is seen
/// when query_pos - key_pos < sliding_window; <= 0 means no window). out [num_seqs, Hq, D].
/// Flash-decoding: the cache is split over blocks, and the last block of each (sequence, kv
/// head) merges the splits through `workspace` (decode_attention_workspace_bytes for the same
/// batch on the current device). One call at a time per workspace. The workspace's split
/// counters must be zero when the kernel starts, and every call leaves them at zero: with
/// kUNKNOWN (a workspace shared with other work) the call clears them with a memset on
/// `stream`; kZERO promises that nothing else wrote the workspace since it was zeroed or since
/// the last decode_attention on it, and saves that launch.
enum class WorkspaceCounters { kUNKNOWN, kZERO };
void decode_attention(const void* q, void* out, int num_q_heads, const SeqBatchView& batch,
                      const KvCacheView& cache, int sliding_window, void* workspace,
                      size_t workspace_bytes, cudaStream_t stream,
                      WorkspaceCounters counters = WorkspaceCounters::kUNKNOWN);

/// Prefill attention over packed sequences: q/out [tokens, Hq, D] with rows grouped by
/// batch.cu_seqlens (required), keys and values read from the cache (append first, so chunked
/// prefill over an existing prefix works too), causal, GQA, optional sliding window, scale
/// 1/sqrt(D). Flash-attention tiling on the tensor cores with fp32 softmax state.
void prefill_attention(const void* q, void* out, int tokens, int num_q_heads,
                       const SeqBatchView& batch, const KvCacheView& cache, int sliding_window,
                       cudaStream_t stream);

// ---------------------------------------------------------------------------------------------
// Sampling

/// ids[r] = argmax of logits[r, 0:vocab] (fp32), ties to the lowest index and NaN counted as
/// the largest value, like torch.argmax.
void argmax(const float* logits, int rows, int vocab, int32_t* ids, cudaStream_t stream);

/// Sampling settings shared by all rows of a call.
struct SamplingParams {
  float temperature = 1.0f;  // <= 0: greedy (argmax)
  int top_k = 0;             // 0 or >= vocab: off
  float top_p = 1.0f;        // >= 1: off
  uint64_t seed = 0;         // Philox key
  uint64_t offset = 0;       // Philox counter (one per step); row r draws counter (offset, r)
  /// Optional device counter added to `offset`, so a captured CUDA graph can advance the
  /// step without being re-captured. Null: unused.
  const uint64_t* device_offset = nullptr;
  /// Optional device array of one Philox key per row: row r then draws counter (offset, 0)
  /// under key row_seeds[r] instead of counter (offset, r) under `seed`, so a sequence draws
  /// the same numbers whichever row of a batch it sits in. Null: unused.
  const uint64_t* row_seeds = nullptr;
};

/// Samples ids[r] from softmax(logits[r] / temperature) restricted to the top_k largest
/// logits and then to the smallest top set whose probability reaches top_p (transformers'
/// TopK then TopP warpers; ties at a threshold, compared on the logits, are kept; probabilities
/// are exp((logit - max) / T) in fp32), by inverse CDF with
/// u = philox_uniform(seed, offset + *device_offset, r) (runtime/cuda/philox.h; with
/// row_seeds: philox_uniform(row_seeds[r], offset + *device_offset, 0)). The CDF runs
/// over the kept tokens from the most to the least likely (ties by index) when a filter is on
/// and the kept set fits the fast path (<= 8192 tokens past top_k; for top-p alone, a top-p set
/// within the 4096 most likely tokens); otherwise, and without filters, in index order.
void sample(const float* logits, int rows, int vocab, const SamplingParams& params, int32_t* ids,
            cudaStream_t stream);

}  // namespace bindery::cuda

#pragma once
// CPU kernels: one entry point that runs a graph node on contiguous host tensors.
// Internal to the runtime (and the builder's constant folding).
//
// Contract every kernel keeps:
//  - Deterministic: the same inputs give bit-identical outputs on every run and in every
//    engine (refit engines are compared bit-exactly with fresh builds).
//  - Float ops accept f32, f16 or bf16 inputs (weights may be stored in reduced precision) and
//    compute and write f32, as infer_outputs says.
//  - A fused convolution epilogue gives bit-identical results to running the convolution and
//    then the separate unary/elementwise kernels (they share the scalar functions below).

#include <cmath>
#include <cstdint>
#include <span>
#include <unordered_map>
#include <vector>

#include "bindery/graph.h"

namespace bindery::cpu {

/// A contiguous row-major tensor in host memory. `data` is nullptr for an absent optional input.
struct TensorRef {
  DataType dtype = DataType::kFLOAT;
  Dims dims;
  void* data = nullptr;
};

/// The keys and values attention layers keep between runs of one execution context: one cache
/// per attention layer (AttentionParams::cache_index), one growing buffer per sequence id.
class KvCache {
 public:
  struct Sequence {
    std::vector<float> keys, values;  // [capacity, kv_heads * head_dim], filled to `length`
    int64_t length = 0;
  };
  /// The sequence's cache in layer `cache_index`, created empty on first use.
  Sequence& sequence(int64_t cache_index, int64_t seq_id);
  /// Positions held for `seq_id` in layer `cache_index` (all layers agree after a run).
  int64_t length(int64_t seq_id, int64_t cache_index = 0) const;
  void reset();
  void reset_sequence(int64_t seq_id);

 private:
  std::vector<std::unordered_map<int64_t, Sequence>> caches_;
};

/// Runs `node`. Outputs are preallocated by the caller with the dtypes and dims that
/// infer_outputs gives for these inputs. Throws Error(kUNSUPPORTED) naming the node for a
/// dtype combination no kernel handles. Attention nodes need `kv_cache` (the context's).
void run_node(const GraphNode& node, std::span<const TensorRef> inputs,
              std::span<const TensorRef> outputs, KvCache* kv_cache = nullptr);

/// C = alpha * op(A) * op(B) + beta * C, row-major, f32. Optimised (OpenBLAS).
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
          int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc);
/// The same, naive triple loop: the reference gemm() is tested against.
void gemm_reference(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                    const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
                    int64_t ldc);

/// Scalar functions shared by the standalone kernels and fused epilogues.
float apply_unary(UnaryOp op, float x);
float apply_binary(ElementwiseOp op, float a, float b);

}  // namespace bindery::cpu

#pragma once
// Internal to the CPU kernels: the per-layer kernel entry points run_node dispatches to, the
// scalar functions every float kernel and the fused convolution epilogue share, and helpers
// (f32 views of reduced-precision inputs, strided copies, row iteration).

#include <array>
#include <cmath>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "runtime/cpu/kernels.h"

namespace bindery::cpu::detail {

/// Work (in elements) below which a loop runs on one thread.
inline constexpr int64_t kGrain = 1 << 15;

/// "node 'name' (matmul)", the prefix of every kernel error.
std::string node_label(const GraphNode& node);
[[noreturn]] void unsupported(const GraphNode& node, const std::string& what);

inline int64_t numel(const TensorRef& t) { return volume(t.dims); }
inline float* f32_out(const TensorRef& t) { return static_cast<float*>(t.data); }

/// Allocator that leaves elements uninitialised: scratch buffers are always fully written
/// before they are read, so zero-filling them would only cost a pass over memory.
template <class T>
struct UninitAllocator {
  using value_type = T;
  UninitAllocator() = default;
  template <class U>
  UninitAllocator(const UninitAllocator<U>&) noexcept {}
  T* allocate(size_t n) { return std::allocator<T>{}.allocate(n); }
  void deallocate(T* p, size_t n) noexcept { std::allocator<T>{}.deallocate(p, n); }
  template <class U>
  void construct(U* p) noexcept {
    ::new (static_cast<void*>(p)) U;
  }
  template <class U, class... A>
  void construct(U* p, A&&... a) {
    ::new (static_cast<void*>(p)) U(std::forward<A>(a)...);
  }
  friend bool operator==(const UninitAllocator&, const UninitAllocator&) { return true; }
};
using Scratch = std::vector<float, UninitAllocator<float>>;

/// An f32 view of `t`: its own data when it is f32, else `scratch` filled by converting f16 or
/// bf16. Throws kUNSUPPORTED for other dtypes.
const float* as_f32(const GraphNode& node, const TensorRef& t, Scratch& scratch);
/// Converts n f16/bf16/f32 elements to f32 in parallel (elementwise, so deterministic).
void widen_f32(DataType from, const void* src, float* dst, int64_t n);

/// dst[i] = src[i] over the index space `dims`, each side with its own element strides.
/// Elements are `elem_bytes` wide (1, 2, 4 or 8). Parallel, and a memcpy per row when both
/// sides are contiguous along the innermost dim.
void strided_copy(const Dims& dims, const void* src, std::vector<int64_t> src_strides, void* dst,
                  std::vector<int64_t> dst_strides, int elem_bytes);

/// Merges adjacent dims that every operand walks contiguously and drops size-1 dims, so
/// index loops run over as few, as long dims as possible. Keeps at least one dim.
template <size_t K>
void coalesce(Dims& dims, std::array<std::vector<int64_t>, K>& strides) {
  Dims d;
  std::array<std::vector<int64_t>, K> s;
  for (size_t i = 0; i < dims.size(); ++i) {
    if (dims[i] == 1) continue;
    bool merge = !d.empty();
    for (size_t k = 0; k < K && merge; ++k) merge = s[k].back() == strides[k][i] * dims[i];
    if (merge) {
      // dim i is inner to the previous kept dim: the pair walks like one dim of size a*b
      // with dim i's strides.
      d.back() *= dims[i];
      for (size_t k = 0; k < K; ++k) s[k].back() = strides[k][i];
    } else {
      d.push_back(dims[i]);
      for (size_t k = 0; k < K; ++k) s[k].push_back(strides[k][i]);
    }
  }
  if (d.empty()) {
    d.push_back(1);
    for (size_t k = 0; k < K; ++k) s[k].push_back(0);
  }
  dims = std::move(d);
  strides = std::move(s);
}

/// Calls f(row, offsets) for rows [begin, end) of the index space `outer` (row-major), where
/// offsets[k] is the element offset of operand k at the row, from its per-dim strides.
template <size_t K, class F>
void for_each_row(const Dims& outer, const std::array<std::vector<int64_t>, K>& strides,
                  int64_t begin, int64_t end, F&& f) {
  const size_t r = outer.size();
  std::vector<int64_t> idx(r, 0);
  std::array<int64_t, K> off{};
  int64_t rem = begin;
  for (size_t d = r; d-- > 0;) {
    idx[d] = rem % outer[d];
    rem /= outer[d];
    for (size_t k = 0; k < K; ++k) off[k] += idx[d] * strides[k][d];
  }
  for (int64_t row = begin; row < end; ++row) {
    f(row, off);
    for (size_t d = r; d-- > 0;) {
      ++idx[d];
      for (size_t k = 0; k < K; ++k) off[k] += strides[k][d];
      if (idx[d] < outer[d]) break;
      for (size_t k = 0; k < K; ++k) off[k] -= strides[k][d] * outer[d];
      idx[d] = 0;
    }
  }
}

// ---- scalar functions (shared by standalone kernels and the fused epilogue) ----------------

template <UnaryOp Op>
inline float unary_fn(float x) {
  if constexpr (Op == UnaryOp::kRELU) {
    return x < 0.0f ? 0.0f : x;  // NaN passes through, like torch.relu
  } else if constexpr (Op == UnaryOp::kGELU_ERF) {
    return 0.5f * x * (1.0f + std::erf(x * 0.70710678118654752f));
  } else if constexpr (Op == UnaryOp::kGELU_TANH) {
    const float inner = 0.79788456080286536f * (x + 0.044715f * x * x * x);
    return 0.5f * x * (1.0f + std::tanh(inner));
  } else if constexpr (Op == UnaryOp::kSILU) {
    return x * (1.0f / (1.0f + std::exp(-x)));
  } else if constexpr (Op == UnaryOp::kSIGMOID) {
    return 1.0f / (1.0f + std::exp(-x));
  } else if constexpr (Op == UnaryOp::kTANH) {
    return std::tanh(x);
  } else if constexpr (Op == UnaryOp::kEXP) {
    return std::exp(x);
  } else if constexpr (Op == UnaryOp::kSQRT) {
    return std::sqrt(x);
  } else if constexpr (Op == UnaryOp::kRSQRT) {
    return 1.0f / std::sqrt(x);
  } else if constexpr (Op == UnaryOp::kNEG) {
    return -x;
  } else {
    static_assert(Op == UnaryOp::kABS);
    return std::fabs(x);
  }
}

template <ElementwiseOp Op>
inline float binary_fn(float a, float b) {
  if constexpr (Op == ElementwiseOp::kSUM) {
    return a + b;
  } else if constexpr (Op == ElementwiseOp::kSUB) {
    return a - b;
  } else if constexpr (Op == ElementwiseOp::kPROD) {
    return a * b;
  } else if constexpr (Op == ElementwiseOp::kDIV) {
    return a / b;
  } else if constexpr (Op == ElementwiseOp::kMIN) {
    return (a < b || std::isnan(a)) ? a : b;  // NaN propagates, like torch.minimum
  } else if constexpr (Op == ElementwiseOp::kMAX) {
    return (a > b || std::isnan(a)) ? a : b;
  } else {
    static_assert(Op == ElementwiseOp::kPOW);
    return std::pow(a, b);
  }
}

/// Calls f.template operator()<Op>() with `op` as a compile-time constant.
template <class F>
decltype(auto) with_unary(UnaryOp op, F&& f) {
  switch (op) {
    case UnaryOp::kRELU: return f.template operator()<UnaryOp::kRELU>();
    case UnaryOp::kGELU_ERF: return f.template operator()<UnaryOp::kGELU_ERF>();
    case UnaryOp::kGELU_TANH: return f.template operator()<UnaryOp::kGELU_TANH>();
    case UnaryOp::kSILU: return f.template operator()<UnaryOp::kSILU>();
    case UnaryOp::kSIGMOID: return f.template operator()<UnaryOp::kSIGMOID>();
    case UnaryOp::kTANH: return f.template operator()<UnaryOp::kTANH>();
    case UnaryOp::kEXP: return f.template operator()<UnaryOp::kEXP>();
    case UnaryOp::kSQRT: return f.template operator()<UnaryOp::kSQRT>();
    case UnaryOp::kRSQRT: return f.template operator()<UnaryOp::kRSQRT>();
    case UnaryOp::kNEG: return f.template operator()<UnaryOp::kNEG>();
    case UnaryOp::kABS: break;
  }
  return f.template operator()<UnaryOp::kABS>();
}

template <class F>
decltype(auto) with_binary(ElementwiseOp op, F&& f) {
  switch (op) {
    case ElementwiseOp::kSUM: return f.template operator()<ElementwiseOp::kSUM>();
    case ElementwiseOp::kSUB: return f.template operator()<ElementwiseOp::kSUB>();
    case ElementwiseOp::kPROD: return f.template operator()<ElementwiseOp::kPROD>();
    case ElementwiseOp::kDIV: return f.template operator()<ElementwiseOp::kDIV>();
    case ElementwiseOp::kMIN: return f.template operator()<ElementwiseOp::kMIN>();
    case ElementwiseOp::kMAX: return f.template operator()<ElementwiseOp::kMAX>();
    case ElementwiseOp::kPOW: break;
  }
  return f.template operator()<ElementwiseOp::kPOW>();
}

/// In place: x[i] = unary(x[i]) for i < n (one thread; callers parallelise).
void unary_inplace(UnaryOp op, float* x, int64_t n);
/// In place: x[i] = binary(x[i], c) for i < n.
void binary_scalar_inplace(ElementwiseOp op, float* x, float c, int64_t n);

// ---- kernels (inputs already checked by run_node against infer_outputs) -----------------------

using Inputs = std::span<const TensorRef>;

/// f32 view of the optional input `i` (a bias), or nullptr when the node has none.
inline const float* optional_f32(const GraphNode& node, Inputs in, size_t i, Scratch& scratch) {
  return in.size() > i && in[i].data != nullptr ? as_f32(node, in[i], scratch) : nullptr;
}

void run_matmul(const GraphNode& node, Inputs in, const TensorRef& out);
void run_elementwise(const GraphNode& node, Inputs in, const TensorRef& out);
void run_unary(const GraphNode& node, Inputs in, const TensorRef& out);
void run_softmax(const GraphNode& node, Inputs in, const TensorRef& out);
void run_reduce(const GraphNode& node, Inputs in, const TensorRef& out);
void run_rmsnorm(const GraphNode& node, Inputs in, const TensorRef& out);
void run_layernorm(const GraphNode& node, Inputs in, const TensorRef& out);
void run_gather(const GraphNode& node, Inputs in, const TensorRef& out);
void run_reshape(const GraphNode& node, Inputs in, const TensorRef& out);
void run_transpose(const GraphNode& node, Inputs in, const TensorRef& out);
void run_concat(const GraphNode& node, Inputs in, const TensorRef& out);
void run_slice(const GraphNode& node, Inputs in, const TensorRef& out);
void run_cast(const GraphNode& node, Inputs in, const TensorRef& out);
void run_conv(const GraphNode& node, Inputs in, const TensorRef& out);
void run_batchnorm(const GraphNode& node, Inputs in, const TensorRef& out);
void run_pooling(const GraphNode& node, Inputs in, const TensorRef& out);
void run_rotary(const GraphNode& node, Inputs in, const TensorRef& out);
void run_attention(const GraphNode& node, Inputs in, const TensorRef& out, KvCache& cache);
void run_moe(const GraphNode& node, Inputs in, const TensorRef& out);
void run_matmul_int4(const GraphNode& node, Inputs in, const TensorRef& out);

/// kMOE's routing of `tokens` tokens from their router logits ([tokens, num_experts], f32):
/// each token's top_k experts, largest probability first, and their weights.
struct MoeRoute {
  std::vector<int64_t> experts;  // [tokens * top_k]
  std::vector<float> weights;    // [tokens * top_k]
};
MoeRoute moe_route(const MoeParams& p, const float* logits, int64_t tokens);

}  // namespace bindery::cpu::detail

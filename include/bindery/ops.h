#pragma once
// The operator vocabulary shared by Network (what users build), the builder's graph, the plan
// and every backend: layer types, their parameters, and shape inference.

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "bindery/dims.h"
#include "bindery/dtype.h"
#include "bindery/tensor_desc.h"

namespace bindery {

enum class LayerType : uint8_t {
  kCONSTANT,     // outputs a named weight
  kMATMUL,       // inputs a, b: batched, broadcasting leading dims; optional transposes
  kELEMENTWISE,  // inputs a, b: numpy broadcasting
  kUNARY,
  kSOFTMAX,
  kREDUCE,
  kRMSNORM,    // inputs x, weight (last dim)
  kLAYERNORM,  // inputs x, weight, bias (last dim; bias optional)
  kGATHER,     // inputs data, indices (int32/int64): embedding lookup along `axis`
  kRESHAPE,
  kTRANSPOSE,
  kCONCAT,
  kSLICE,
  kCAST,
  kCONVOLUTION,  // inputs x [N,C,H,W], kernel [O, C/groups, kh, kw], bias [O] optional
  kBATCHNORM,    // inputs x [N,C,...], scale, bias, mean, var (each [C])
  kPOOLING,      // x [N,C,H,W]
  // Decoder ops on packed token streams: T tokens of one or many sequences side by side, each
  // with its position and the sequence (KV cache slot) it belongs to.
  kROTARY,     // inputs x [T, heads * head_dim], positions [T], seq_ids [T] (optional): rope
  kATTENTION,  // inputs q [T, Hq*D], k [T, Hkv*D], v [T, Hkv*D], positions [T], seq_ids [T]:
               // causal GQA over the context's KV cache (written first, then attended)
  kMOE,        // inputs x [T, H], router_logits [T, E], gate_up [E*2F, H], down [E*H, F]: a sparse
               // mixture of gated-MLP experts, top-k routed per token
  kMATMUL_INT4,  // inputs x [..., in], qweight i32 [in/8, out], qzeros i32 [G, out/8], scales
                 // [G, out] (float), g_idx i32 [in]: y = x · Wᵀ with W GPTQ int4, kept packed
  // Collectives over the ranks of a tensor-parallel group (the execution context's
  // Communicator runs them; every rank's engine has the same nodes in the same order).
  kALL_REDUCE,  // input x (f32): the elementwise sum of every rank's x, on every rank
  kALL_GATHER,  // input x (f32): every rank's x concatenated along `axis`, in rank order
};

enum class ElementwiseOp : uint8_t { kSUM, kSUB, kPROD, kDIV, kMIN, kMAX, kPOW };
enum class UnaryOp : uint8_t {
  kRELU,
  kGELU_ERF,
  kGELU_TANH,
  kSILU,
  kSIGMOID,
  kTANH,
  kEXP,
  kSQRT,
  kRSQRT,
  kNEG,
  kABS
};
enum class ReduceOp : uint8_t { kSUM, kAVG, kMAX };
enum class PoolingType : uint8_t { kMAX, kAVERAGE };

struct ConstantParams {
  std::string weights_name;  // unique per network; the refitter's name for it
};
struct MatMulParams {
  bool transpose_a = false;
  bool transpose_b = false;
};
struct ElementwiseParams {
  ElementwiseOp op = ElementwiseOp::kSUM;
};
struct UnaryParams {
  UnaryOp op = UnaryOp::kRELU;
};
struct SoftmaxParams {
  int axis = -1;
};
struct ReduceParams {
  ReduceOp op = ReduceOp::kSUM;
  std::vector<int> axes;  // negative counts from the end
  bool keep_dims = false;
};
struct NormParams {  // kRMSNORM and kLAYERNORM: normalise over the last dimension
  float epsilon = 1e-5f;
};
struct GatherParams {
  int axis = 0;
  /// The data holds rows [index_offset, index_offset + data.dims[axis]) of a larger table (a
  /// vocab-parallel embedding's share): index i reads row i - index_offset.
  int64_t index_offset = 0;
  /// An index outside the data's rows gives zeros instead of an error (each rank of a
  /// vocab-parallel embedding looks up the tokens it holds; an all-reduce adds the rest).
  bool zero_out_of_range = false;
};
struct ReshapeParams {
  Dims shape;  // 0 copies the input's dim at that index, one -1 is inferred
};
struct TransposeParams {
  std::vector<int> perm;
};
struct ConcatParams {
  int axis = 0;
};
struct SliceParams {  // one entry per input dim
  Dims start;
  Dims size;    // kDYNAMIC (-1): to the end of the dim, ceil((dim - start) / stride)
  Dims stride;  // empty means all 1
};
struct CastParams {
  DataType to = DataType::kFLOAT;
};
/// One step applied to a convolution's output inside the convolution (a fused activation).
/// An elementwise step's constant is baked: a scalar (one value) or one value per channel.
struct EpilogueStep {
  bool is_unary = true;
  UnaryOp unary = UnaryOp::kRELU;
  ElementwiseOp binary = ElementwiseOp::kMAX;  // out = binary(out, constant)
  std::vector<float> constant;
};
struct ConvParams {
  Dims stride = {1, 1};
  Dims padding = {0, 0};  // symmetric, per spatial dim
  Dims dilation = {1, 1};
  int64_t groups = 1;
  std::vector<EpilogueStep> epilogue;  // filled by the builder's fusion pass
};
struct BatchNormParams {
  float epsilon = 1e-5f;
};
struct PoolingParams {
  PoolingType type = PoolingType::kMAX;
  Dims window = {2, 2};
  Dims stride = {2, 2};
  Dims padding = {0, 0};
  bool count_include_pad = false;  // average pooling divisor
};

/// Rotary position embedding, rotate-half layout (transformers' Llama): within each head, the
/// pairs (i, i + rotary_dim/2) for i < rotary_dim/2 are rotated by position × inv_freq[i]; dims
/// from rotary_dim on pass through. cos and sin are scaled by attention_factor (yarn).
struct RotaryParams {
  int64_t num_heads = 1;
  int64_t head_dim = 0;
  std::vector<float> inv_freq;  // rotary_dim / 2 frequencies
  float attention_factor = 1.0f;
  /// Dynamic NTK scaling (0: off). A sequence whose largest position in a run reaches length
  /// L > dynamic_max_positions is rotated, in that run, with
  ///   inv_freq[i] = 1 / base^(2i / rotary_dim),
  ///   base = theta * (factor * L / dynamic_max_positions - (factor - 1))^(rotary_dim / (rotary_dim
  ///   - 2)).
  float dynamic_factor = 0.0f;
  float theta = 10000.0f;
  int64_t dynamic_max_positions = 0;
};
/// Attention of each token over its own sequence's positions [lo, position], lo = 0 or
/// position - sliding_window + 1. Keys and values of the run's tokens are written into the KV
/// cache slot seq_ids[t] at positions[t] first, so a prompt and its later tokens can come in
/// one run or many. A sequence's positions must continue where its cache ends (or restart
/// lower, which drops what came after).
struct AttentionParams {
  int64_t num_heads = 1;
  int64_t num_kv_heads = 1;
  int64_t head_dim = 0;
  float scale = 1.0f;
  int64_t sliding_window = 0;  // 0: none
  int64_t max_seq_len = 0;     // positions must be below it
  int64_t cache_index = 0;     // which of the context's KV caches (one per attention layer)
};

/// A sparse mixture of experts (transformers' MixtralSparseMoeBlock). Per token t:
///   probs = softmax(router_logits[t]) (f32); the top_k experts by prob, largest first (ties:
///   the lower expert index first); weights = their probs, divided by the probs' sum when
///   normalize_top_k; y[t] = sum over the chosen experts e, in increasing e, of
///   weight_e * down_e(activation(gate_e x) * up_e x).
/// Expert e's weights are rows of two stacked matrices, so every expert can be one slot part
/// (a refit of one expert rewrites only its rows): gate_up rows [e*2F, e*2F + F) are its gate
/// (w1), rows [e*2F + F, (e+1)*2F) its up (w3), each [F, H]; down rows [e*H, (e+1)*H) its
/// down projection (w2) [H, F].
struct MoeParams {
  int64_t num_experts = 1;  // E
  int64_t top_k = 1;        // experts per token, 1..E
  int64_t ffn_size = 0;     // F: each expert's intermediate size
  UnaryOp activation = UnaryOp::kSILU;
  bool normalize_top_k = true;  // Mixtral renormalises the chosen probs to sum to 1
};

/// kMATMUL_INT4: a weight-only int4 linear layer in the GPTQ (AutoGPTQ) packing. qweight holds 8
/// 4-bit values per word along the input dim (value j of word [r, o] is input row 8r + j:
/// (w >> 4j) & 0xF); qzeros 8 per word along the output dim; g_idx[i] is input row i's group.
/// W[o, i] = (q[i, o] - zero[g_idx[i], o]) * scale[g_idx[i], o], where zero is the stored value
/// plus zero_offset (1 in AutoGPTQ's v1 format, which stores zero - 1; 0 in gptq_v2).
struct Int4MatmulParams {
  int64_t in_features = 0;
  int64_t out_features = 0;
  int64_t group_count = 1;
  int64_t zero_offset = 1;
};

/// kALL_REDUCE / kALL_GATHER: the group the engine was built for (its rank count), so that
/// shapes are static and a context whose Communicator has another size is refused.
struct CollectiveParams {
  int64_t group_size = 1;
  int axis = -1;  // kALL_GATHER's concatenation axis
};

using LayerParams =
    std::variant<ConstantParams, MatMulParams, ElementwiseParams, UnaryParams, SoftmaxParams,
                 ReduceParams, NormParams, GatherParams, ReshapeParams, TransposeParams,
                 ConcatParams, SliceParams, CastParams, ConvParams, BatchNormParams, PoolingParams,
                 RotaryParams, AttentionParams, MoeParams, Int4MatmulParams, CollectiveParams>;

/// The params alternative a layer type carries (kRMSNORM/kLAYERNORM share NormParams).
LayerParams default_params(LayerType type);
/// True if `params` holds the alternative `type` expects.
bool params_match(LayerType type, const LayerParams& params);

std::string_view layer_type_name(LayerType t);  // "matmul", "conv2d", ...
std::string_view elementwise_op_name(
    ElementwiseOp o);                         // "add", "sub", "mul", "div", "min", "max", "pow"
std::string_view unary_op_name(UnaryOp o);    // "relu", "gelu_erf", "gelu_tanh", ...
std::string_view reduce_op_name(ReduceOp o);  // "sum", "mean", "max"
std::string_view pooling_type_name(PoolingType t);  // "max", "avg"

/// True for input `i` of `type` that may be absent (layernorm and convolution bias, rotary
/// seq_ids).
bool is_optional_input(LayerType type, size_t i);
/// Number of inputs a layer type accepts: [min, max].
std::pair<int, int> input_arity(LayerType t);

/// An absent optional input (layernorm bias = input 2, convolution bias = input 2; a
/// GraphNode input index of -1, a null Tensor*) is passed to infer_outputs as kABSENT_DESC:
/// dims {-2}, which no real tensor has (a default TensorDesc{} is a real f32 scalar).
/// Trailing optional inputs may also simply be left out of the span.
inline const TensorDesc kABSENT_DESC{DataType::kFLOAT, Dims{-2}};
inline bool is_absent(const TensorDesc& d) { return d.dims.size() == 1 && d.dims[0] == -2; }

/// Output descriptions for a layer with these inputs. Dynamic dims propagate (a dim that
/// depends on a dynamic input dim is kDYNAMIC). Output dtype: kFLOAT for every float-computing
/// op whatever float dtype its inputs have (weights may be stored f16/bf16); kCAST gives `to`;
/// kGATHER/kRESHAPE/kTRANSPOSE/kCONCAT/kSLICE keep the data dtype (a reduced-precision
/// weight gathered is widened to kFLOAT). Throws Error(kINVALID_NETWORK) saying what is wrong
/// (ranks, dims, dtypes, params); the caller adds the layer's name.
std::vector<TensorDesc> infer_outputs(LayerType type, const LayerParams& params,
                                      std::span<const TensorDesc> inputs);

}  // namespace bindery

// Operator vocabulary: names, parameter alternatives, arity and shape inference.
//
// Shape inference is the one place that decides what a layer accepts, so backends can trust
// the shapes they are handed (the CPU kernels re-run it on concrete dims before they touch
// memory). Dynamic dims (kDYNAMIC) propagate: an output dim is known only when every input
// dim it depends on is known, or when a broadcast/equality rule pins it to a known value.
//
// Choices the header leaves open, made here:
//  - Float-computing layers (matmul, elementwise, unary, softmax, reduce, norms, conv,
//    batchnorm, pooling) take f32/f16/bf16 inputs only; integer tensors go through kCAST.
//  - kINT4 (packed) tensors are rejected by every layer: no kernel reads them yet.
//  - kREDUCE needs at least one axis; duplicated axes are an error.
//  - kSLICE: start >= 0, stride >= 1 (positive only), size >= 0 or kDYNAMIC ("to the end").
//  - kGATHER indices are taken as non-negative (no wrap-around of negative indices).

#include "bindery/ops.h"

#include <algorithm>
#include <climits>
#include <iterator>
#include <variant>

#include "bindery/error.h"

namespace bindery {

// ---- names -----------------------------------------------------------------------------------

std::string_view layer_type_name(LayerType t) {
  switch (t) {
    case LayerType::kCONSTANT: return "constant";
    case LayerType::kMATMUL: return "matmul";
    case LayerType::kELEMENTWISE: return "elementwise";
    case LayerType::kUNARY: return "unary";
    case LayerType::kSOFTMAX: return "softmax";
    case LayerType::kREDUCE: return "reduce";
    case LayerType::kRMSNORM: return "rmsnorm";
    case LayerType::kLAYERNORM: return "layernorm";
    case LayerType::kGATHER: return "gather";
    case LayerType::kRESHAPE: return "reshape";
    case LayerType::kTRANSPOSE: return "transpose";
    case LayerType::kCONCAT: return "concat";
    case LayerType::kSLICE: return "slice";
    case LayerType::kCAST: return "cast";
    case LayerType::kCONVOLUTION: return "conv2d";
    case LayerType::kBATCHNORM: return "batchnorm";
    case LayerType::kPOOLING: return "pooling";
    case LayerType::kROTARY: return "rotary";
    case LayerType::kATTENTION: return "attention";
    case LayerType::kMOE: return "moe";
    case LayerType::kMATMUL_INT4: return "matmul_int4";
    case LayerType::kALL_REDUCE: return "all_reduce";
    case LayerType::kALL_GATHER: return "all_gather";
  }
  return "unknown";
}

std::string_view elementwise_op_name(ElementwiseOp o) {
  switch (o) {
    case ElementwiseOp::kSUM: return "add";
    case ElementwiseOp::kSUB: return "sub";
    case ElementwiseOp::kPROD: return "mul";
    case ElementwiseOp::kDIV: return "div";
    case ElementwiseOp::kMIN: return "min";
    case ElementwiseOp::kMAX: return "max";
    case ElementwiseOp::kPOW: return "pow";
  }
  return "unknown";
}

std::string_view unary_op_name(UnaryOp o) {
  switch (o) {
    case UnaryOp::kRELU: return "relu";
    case UnaryOp::kGELU_ERF: return "gelu_erf";
    case UnaryOp::kGELU_TANH: return "gelu_tanh";
    case UnaryOp::kSILU: return "silu";
    case UnaryOp::kSIGMOID: return "sigmoid";
    case UnaryOp::kTANH: return "tanh";
    case UnaryOp::kEXP: return "exp";
    case UnaryOp::kSQRT: return "sqrt";
    case UnaryOp::kRSQRT: return "rsqrt";
    case UnaryOp::kNEG: return "neg";
    case UnaryOp::kABS: return "abs";
  }
  return "unknown";
}

std::string_view reduce_op_name(ReduceOp o) {
  switch (o) {
    case ReduceOp::kSUM: return "sum";
    case ReduceOp::kAVG: return "mean";
    case ReduceOp::kMAX: return "max";
  }
  return "unknown";
}

std::string_view pooling_type_name(PoolingType t) {
  switch (t) {
    case PoolingType::kMAX: return "max";
    case PoolingType::kAVERAGE: return "avg";
  }
  return "unknown";
}

// ---- params and arity ------------------------------------------------------------------------

bool is_optional_input(LayerType type, size_t i) {
  return i == 2 && (type == LayerType::kLAYERNORM || type == LayerType::kCONVOLUTION ||
                    type == LayerType::kROTARY);
}

LayerParams default_params(LayerType type) {
  switch (type) {
    case LayerType::kCONSTANT: return ConstantParams{};
    case LayerType::kMATMUL: return MatMulParams{};
    case LayerType::kELEMENTWISE: return ElementwiseParams{};
    case LayerType::kUNARY: return UnaryParams{};
    case LayerType::kSOFTMAX: return SoftmaxParams{};
    case LayerType::kREDUCE: return ReduceParams{};
    case LayerType::kRMSNORM: return NormParams{};
    case LayerType::kLAYERNORM: return NormParams{};
    case LayerType::kGATHER: return GatherParams{};
    case LayerType::kRESHAPE: return ReshapeParams{};
    case LayerType::kTRANSPOSE: return TransposeParams{};
    case LayerType::kCONCAT: return ConcatParams{};
    case LayerType::kSLICE: return SliceParams{};
    case LayerType::kCAST: return CastParams{};
    case LayerType::kCONVOLUTION: return ConvParams{};
    case LayerType::kBATCHNORM: return BatchNormParams{};
    case LayerType::kPOOLING: return PoolingParams{};
    case LayerType::kROTARY: return RotaryParams{};
    case LayerType::kATTENTION: return AttentionParams{};
    case LayerType::kMOE: return MoeParams{};
    case LayerType::kMATMUL_INT4: return Int4MatmulParams{};
    case LayerType::kALL_REDUCE:
    case LayerType::kALL_GATHER: return CollectiveParams{};
  }
  throw Error(ErrorCode::kINVALID_ARGUMENT,
              "unknown layer type " + std::to_string(static_cast<int>(type)));
}

bool params_match(LayerType type, const LayerParams& params) {
  return params.index() == default_params(type).index();
}

std::pair<int, int> input_arity(LayerType t) {
  switch (t) {
    case LayerType::kCONSTANT: return {0, 0};
    case LayerType::kMATMUL:
    case LayerType::kELEMENTWISE:
    case LayerType::kRMSNORM:
    case LayerType::kGATHER: return {2, 2};
    case LayerType::kLAYERNORM:
    case LayerType::kCONVOLUTION: return {2, 3};
    case LayerType::kCONCAT: return {1, INT_MAX};
    case LayerType::kBATCHNORM: return {5, 5};
    case LayerType::kUNARY:
    case LayerType::kSOFTMAX:
    case LayerType::kREDUCE:
    case LayerType::kRESHAPE:
    case LayerType::kTRANSPOSE:
    case LayerType::kSLICE:
    case LayerType::kCAST:
    case LayerType::kPOOLING: return {1, 1};
    case LayerType::kROTARY: return {2, 3};
    case LayerType::kATTENTION: return {5, 5};
    case LayerType::kMOE: return {4, 4};
    case LayerType::kMATMUL_INT4: return {5, 5};
    case LayerType::kALL_REDUCE:
    case LayerType::kALL_GATHER: return {1, 1};
  }
  return {0, 0};
}

// ---- shape inference -------------------------------------------------------------------------

namespace {

[[noreturn]] void fail(const std::string& msg) { throw Error(ErrorCode::kINVALID_NETWORK, msg); }

// The message is only built when the check fails: run_node re-runs shape inference on every
// node of every inference, so the passing path must not allocate strings.
#define BINDERY_EXPECT(cond, msg) \
  do {                            \
    if (!(cond)) fail(msg);       \
  } while (0)

bool known(int64_t d) { return d >= 0; }
std::string str(const Dims& d) { return to_string(d); }
std::string str(int64_t v) { return std::to_string(v); }
std::string dt(DataType t) { return std::string(dtype_name(t)); }

constexpr const char* kParamsNames[] = {
    "ConstantParams",  "MatMulParams", "ElementwiseParams", "UnaryParams",   "SoftmaxParams",
    "ReduceParams",    "NormParams",   "GatherParams",      "ReshapeParams", "TransposeParams",
    "ConcatParams",    "SliceParams",  "CastParams",        "ConvParams",    "BatchNormParams",
    "PoolingParams",   "RotaryParams", "AttentionParams",   "MoeParams",     "Int4MatmulParams",
    "CollectiveParams"};
static_assert(std::size(kParamsNames) == std::variant_size_v<LayerParams>);

template <class P>
const P& params_as(LayerType type, const LayerParams& params) {
  const P* p = std::get_if<P>(&params);
  if (!p)
    fail(std::string(layer_type_name(type)) + " expects " +
         kParamsNames[default_params(type).index()] + ", got " + kParamsNames[params.index()]);
  return *p;
}

/// Axis in [-rank, rank) to [0, rank).
int normalize_axis(int64_t axis, size_t rank, const char* what) {
  const int64_t r = static_cast<int64_t>(rank);
  BINDERY_EXPECT(axis >= -r && axis < r, std::string(what) + " axis " + str(axis) +
                                             " is out of range for rank " + str(r) +
                                             " (expected [" + str(-r) + ", " + str(r) + "))");
  return static_cast<int>(axis < 0 ? axis + r : axis);
}

void expect_float(const TensorDesc& d, const char* what) {
  BINDERY_EXPECT(is_floating(d.dtype),
                 std::string(what) + " must be f32, f16 or bf16, got " + dt(d.dtype));
}

void expect_rank(const TensorDesc& d, size_t rank, const char* what) {
  BINDERY_EXPECT(d.dims.size() == rank, std::string(what) + " must have rank " + str(rank) +
                                            ", got " + str(d.dims) + " (rank " +
                                            str(d.dims.size()) + ")");
}

void expect_min_rank(const TensorDesc& d, size_t rank, const char* what) {
  BINDERY_EXPECT(d.dims.size() >= rank, std::string(what) + " must have rank >= " + str(rank) +
                                            ", got " + str(d.dims) + " (rank " +
                                            str(d.dims.size()) + ")");
}

/// Two dims that must be equal when both are known.
bool agree(int64_t a, int64_t b) { return !known(a) || !known(b) || a == b; }
/// The known one of two agreeing dims, else kDYNAMIC.
int64_t pick_known(int64_t a, int64_t b) { return known(a) ? a : b; }

/// numpy broadcast of one dim pair; false if incompatible.
bool broadcast_dim(int64_t a, int64_t b, int64_t& out) {
  if (a == b) {
    out = a;
  } else if (a == 1) {
    out = b;
  } else if (b == 1) {
    out = a;
  } else if (!known(a)) {  // must be 1 or b at run time: the result is b either way
    out = b;
  } else if (!known(b)) {
    out = a;
  } else {
    return false;
  }
  return true;
}

/// numpy broadcast of two shapes (right-aligned). Throws naming `what`, both shapes and the dim.
Dims broadcast(const Dims& a, const Dims& b, const std::string_view what) {
  const size_t rank = std::max(a.size(), b.size());
  Dims out(rank);
  for (size_t i = 0; i < rank; ++i) {
    const int64_t da = i < rank - a.size() ? 1 : a[i - (rank - a.size())];
    const int64_t db = i < rank - b.size() ? 1 : b[i - (rank - b.size())];
    if (!broadcast_dim(da, db, out[i]))
      fail(std::string(what) + " do not broadcast: " + str(a) + " and " + str(b) +
           " (aligned dim " + str(i) + ": " + str(da) + " vs " + str(db) + ")");
  }
  return out;
}

/// A 1-D float parameter of length `channels` (kDYNAMIC: any), the `of` dim of `input`.
void expect_vector(const TensorDesc& d, int64_t channels, const char* what, const char* of,
                   const Dims& input) {
  expect_float(d, what);
  BINDERY_EXPECT(d.dims.size() == 1 && agree(d.dims[0], channels),
                 std::string(what) + " must be 1-D [" + str(channels) + "] (" + of + " of input " +
                     str(input) + "), got " + str(d.dims));
}

/// Spatial parameter vector with exactly 2 entries, each >= `min`.
void expect_pair(const Dims& v, int64_t min, const char* what) {
  BINDERY_EXPECT(v.size() == 2,
                 std::string(what) + " must have 2 entries, got " + str(v.size()) + " " + str(v));
  BINDERY_EXPECT(v[0] >= min && v[1] >= min,
                 std::string(what) + " entries must be >= " + str(min) + ", got " + str(v));
}

TensorDesc infer_matmul(const MatMulParams& p, const TensorDesc& a, const TensorDesc& b) {
  expect_float(a, "matmul input a");
  expect_float(b, "matmul input b");
  expect_min_rank(a, 2, "matmul input a");
  expect_min_rank(b, 2, "matmul input b");
  const size_t ra = a.dims.size(), rb = b.dims.size();
  const int64_t m = p.transpose_a ? a.dims[ra - 1] : a.dims[ra - 2];
  const int64_t ka = p.transpose_a ? a.dims[ra - 2] : a.dims[ra - 1];
  const int64_t kb = p.transpose_b ? b.dims[rb - 1] : b.dims[rb - 2];
  const int64_t n = p.transpose_b ? b.dims[rb - 2] : b.dims[rb - 1];
  BINDERY_EXPECT(agree(ka, kb),
                 "matmul inner dims differ: a is " + str(a.dims) +
                     (p.transpose_a ? " (transposed)" : "") + " (K=" + str(ka) + "), b is " +
                     str(b.dims) + (p.transpose_b ? " (transposed)" : "") + " (K=" + str(kb) + ")");
  Dims out = broadcast(Dims(a.dims.begin(), a.dims.end() - 2),
                       Dims(b.dims.begin(), b.dims.end() - 2), "matmul batch dims");
  out.push_back(m);
  out.push_back(n);
  return {DataType::kFLOAT, out};
}

TensorDesc infer_reduce(const ReduceParams& p, const TensorDesc& x) {
  expect_float(x, "reduce input");
  BINDERY_EXPECT(!p.axes.empty(), "reduce needs at least one axis, got none");
  std::vector<bool> reduced(x.dims.size(), false);
  for (int axis : p.axes) {
    const int a = normalize_axis(axis, x.dims.size(), "reduce");
    BINDERY_EXPECT(!reduced[a], "reduce axis " + str(a) + " is listed twice (axes of input " +
                                    str(x.dims) + ")");
    reduced[a] = true;
  }
  Dims out;
  for (size_t i = 0; i < x.dims.size(); ++i) {
    if (!reduced[i])
      out.push_back(x.dims[i]);
    else if (p.keep_dims)
      out.push_back(1);
  }
  return {DataType::kFLOAT, out};
}

TensorDesc infer_norm(LayerType type, const TensorDesc& x, const TensorDesc& weight,
                      const TensorDesc* bias) {
  const bool rms = type == LayerType::kRMSNORM;
  expect_float(x, rms ? "rmsnorm input" : "layernorm input");
  expect_min_rank(x, 1, rms ? "rmsnorm input" : "layernorm input");
  const int64_t last = x.dims.back();
  expect_vector(weight, last, rms ? "rmsnorm weight" : "layernorm weight", "the last dim", x.dims);
  if (bias) expect_vector(*bias, last, "layernorm bias", "the last dim", x.dims);
  return {DataType::kFLOAT, x.dims};
}

TensorDesc infer_gather(const GatherParams& p, const TensorDesc& data, const TensorDesc& idx) {
  expect_min_rank(data, 1, "gather data");
  BINDERY_EXPECT(idx.dtype == DataType::kINT32 || idx.dtype == DataType::kINT64,
                 "gather indices must be i32 or i64, got " + dt(idx.dtype));
  const int axis = normalize_axis(p.axis, data.dims.size(), "gather");
  BINDERY_EXPECT(p.index_offset >= 0,
                 "gather index_offset must be >= 0, got " + str(p.index_offset));
  Dims out(data.dims.begin(), data.dims.begin() + axis);
  out.insert(out.end(), idx.dims.begin(), idx.dims.end());
  out.insert(out.end(), data.dims.begin() + axis + 1, data.dims.end());
  const DataType t = is_floating(data.dtype) ? DataType::kFLOAT : data.dtype;
  return {t, out};
}

TensorDesc infer_collective(LayerType type, const CollectiveParams& p, const TensorDesc& x) {
  const std::string what(layer_type_name(type));
  BINDERY_EXPECT(p.group_size >= 1, what + " group_size must be >= 1, got " + str(p.group_size));
  BINDERY_EXPECT(x.dtype == DataType::kFLOAT, what + " input must be f32, got " + dt(x.dtype));
  if (type == LayerType::kALL_REDUCE) return x;
  BINDERY_EXPECT(!x.dims.empty(), what + " input must have at least 1 dim");
  const int axis = normalize_axis(p.axis, x.dims.size(), what.c_str());
  Dims out = x.dims;
  if (known(out[axis])) out[axis] *= p.group_size;
  return {x.dtype, out};
}

TensorDesc infer_reshape(const ReshapeParams& p, const TensorDesc& x) {
  const Dims& in = x.dims;
  const Dims& shape = p.shape;
  Dims out(shape.size());
  int infer_at = -1;
  // A dynamic input dim copied by a 0 at the same index cancels out of the element count, so
  // [-1, -1, 4096] -> [0, 0, 32, -1] still infers 128.
  std::vector<bool> cancelled(in.size(), false);
  for (size_t i = 0; i < shape.size(); ++i) {
    const int64_t s = shape[i];
    if (s == 0) {
      BINDERY_EXPECT(i < in.size(), "reshape shape " + str(shape) + " copies dim " + str(i) +
                                        " (0) but the input " + str(in) + " has rank " +
                                        str(in.size()));
      out[i] = in[i];
      if (!known(in[i])) cancelled[i] = true;
    } else if (s == -1) {
      BINDERY_EXPECT(infer_at < 0, "reshape shape " + str(shape) + " has more than one -1");
      infer_at = static_cast<int>(i);
    } else {
      BINDERY_EXPECT(s > 0, "reshape shape " + str(shape) + " has invalid dim " + str(s) +
                                " (expected > 0, 0 to copy, or -1 to infer)");
      out[i] = s;
    }
  }
  bool in_known = true;
  int64_t in_count = 1;
  for (size_t i = 0; i < in.size(); ++i) {
    if (cancelled[i]) continue;
    if (!known(in[i]))
      in_known = false;
    else
      in_count *= in[i];
  }
  int64_t out_count = 1;
  for (size_t i = 0; i < out.size(); ++i) {
    if (static_cast<int>(i) == infer_at) continue;
    if (shape[i] == 0 && cancelled[i]) continue;
    out_count *= out[i];
  }
  if (infer_at >= 0) {
    if (!in_known) {
      out[infer_at] = kDYNAMIC;
    } else {
      BINDERY_EXPECT(out_count != 0 && in_count % out_count == 0,
                     "reshape cannot infer -1: input " + str(in) + " has " + str(in_count) +
                         " elements, not a multiple of " + str(out_count) + " (shape " +
                         str(shape) + ")");
      out[infer_at] = in_count / out_count;
    }
  } else if (in_known) {
    BINDERY_EXPECT(in_count == out_count, "reshape changes the element count: input " + str(in) +
                                              " has " + str(in_count) + ", shape " + str(shape) +
                                              " has " + str(out_count));
  }
  return {x.dtype, out};
}

TensorDesc infer_transpose(const TransposeParams& p, const TensorDesc& x) {
  const size_t rank = x.dims.size();
  BINDERY_EXPECT(p.perm.size() == rank, "transpose perm has " + str(p.perm.size()) +
                                            " entries, the input " + str(x.dims) + " has rank " +
                                            str(rank));
  std::vector<bool> seen(rank, false);
  Dims out(rank);
  for (size_t i = 0; i < rank; ++i) {
    const int a = p.perm[i];
    BINDERY_EXPECT(a >= 0 && static_cast<size_t>(a) < rank && !seen[a],
                   "transpose perm is not a permutation of [0, " + str(rank) + "): entry " +
                       str(i) + " is " + str(a));
    seen[a] = true;
    out[i] = x.dims[a];
  }
  return {x.dtype, out};
}

TensorDesc infer_concat(const ConcatParams& p, std::span<const TensorDesc> in) {
  const TensorDesc& first = in[0];
  expect_min_rank(first, 1, "concat input 0");
  const int axis = normalize_axis(p.axis, first.dims.size(), "concat");
  Dims out = first.dims;
  for (size_t i = 1; i < in.size(); ++i) {
    const TensorDesc& t = in[i];
    BINDERY_EXPECT(t.dtype == first.dtype, "concat input " + str(i) + " has dtype " + dt(t.dtype) +
                                               ", input 0 has " + dt(first.dtype));
    BINDERY_EXPECT(t.dims.size() == first.dims.size(),
                   "concat input " + str(i) + " " + str(t.dims) +
                       " has a different rank than input 0 " + str(first.dims));
    for (size_t d = 0; d < out.size(); ++d) {
      if (static_cast<int>(d) == axis) {
        out[d] = known(out[d]) && known(t.dims[d]) ? out[d] + t.dims[d] : kDYNAMIC;
        continue;
      }
      BINDERY_EXPECT(agree(out[d], t.dims[d]), "concat input " + str(i) + " " + str(t.dims) +
                                                   " differs from input 0 " + str(first.dims) +
                                                   " in dim " + str(d) + " (only axis " +
                                                   str(axis) + " may differ)");
      out[d] = pick_known(out[d], t.dims[d]);
    }
  }
  return {first.dtype, out};
}

TensorDesc infer_slice(const SliceParams& p, const TensorDesc& x) {
  const size_t rank = x.dims.size();
  BINDERY_EXPECT(p.start.size() == rank && p.size.size() == rank &&
                     (p.stride.empty() || p.stride.size() == rank),
                 "slice start " + str(p.start) + ", size " + str(p.size) + ", stride " +
                     str(p.stride) + " must each have one entry per input dim (input " +
                     str(x.dims) + ", rank " + str(rank) + "; stride may be empty)");
  Dims out(rank);
  for (size_t d = 0; d < rank; ++d) {
    const int64_t start = p.start[d], size = p.size[d];
    const int64_t stride = p.stride.empty() ? 1 : p.stride[d];
    const int64_t dim = x.dims[d];
    const auto at = [&] { return " in dim " + str(d) + " (input " + str(x.dims) + ")"; };
    BINDERY_EXPECT(stride >= 1, "slice stride must be >= 1, got " + str(stride) + at());
    BINDERY_EXPECT(start >= 0, "slice start must be >= 0, got " + str(start) + at());
    BINDERY_EXPECT(size >= 0 || size == kDYNAMIC,
                   "slice size must be >= 0 or -1 (to the end), got " + str(size) + at());
    BINDERY_EXPECT(!known(dim) || start <= dim,
                   "slice start " + str(start) + " is past the end " + str(dim) + at());
    if (size == kDYNAMIC) {
      out[d] = known(dim) ? (dim - start + stride - 1) / stride : kDYNAMIC;
      continue;
    }
    out[d] = size;
    const int64_t last = start + (size - 1) * stride;
    BINDERY_EXPECT(!known(dim) || size == 0 || last < dim,
                   "slice reads index " + str(last) + " (start " + str(start) + ", size " +
                       str(size) + ", stride " + str(stride) + ") past the end " + str(dim) + at());
  }
  return {x.dtype, out};
}

TensorDesc infer_conv(const ConvParams& p, const TensorDesc& x, const TensorDesc& w,
                      const TensorDesc* bias) {
  expect_float(x, "conv2d input");
  expect_float(w, "conv2d kernel");
  expect_rank(x, 4, "conv2d input (NCHW)");
  expect_rank(w, 4, "conv2d kernel [O, C/groups, kh, kw]");
  BINDERY_EXPECT(!is_dynamic(w.dims), "conv2d kernel must have static dims, got " + str(w.dims));
  expect_pair(p.stride, 1, "conv2d stride");
  expect_pair(p.padding, 0, "conv2d padding");
  expect_pair(p.dilation, 1, "conv2d dilation");
  const int64_t g = p.groups;
  BINDERY_EXPECT(g >= 1, "conv2d groups must be >= 1, got " + str(g));
  const int64_t o = w.dims[0];
  BINDERY_EXPECT(o % g == 0, "conv2d output channels " + str(o) + " (kernel " + str(w.dims) +
                                 ") are not divisible by groups " + str(g));
  const int64_t c = x.dims[1];
  BINDERY_EXPECT(!known(c) || c % g == 0, "conv2d input channels " + str(c) + " (input " +
                                              str(x.dims) + ") are not divisible by groups " +
                                              str(g));
  BINDERY_EXPECT(!known(c) || c / g == w.dims[1],
                 "conv2d kernel " + str(w.dims) + " expects " + str(w.dims[1]) +
                     " input channels per group, input " + str(x.dims) + " has " + str(c) +
                     " / groups " + str(g) + " = " + str(c / g));
  if (bias) expect_vector(*bias, o, "conv2d bias", "the output channels (kernel dim 0)", w.dims);
  for (size_t i = 0; i < p.epilogue.size(); ++i) {
    const EpilogueStep& s = p.epilogue[i];
    const int64_t n = static_cast<int64_t>(s.constant.size());
    BINDERY_EXPECT(s.is_unary || n == 1 || n == o,
                   "conv2d epilogue step " + str(i) + " (" +
                       std::string(elementwise_op_name(s.binary)) + ") has " + str(n) +
                       " constants, expected 1 or " + str(o) + " (one per output channel)");
  }
  Dims out = {x.dims[0], o, kDYNAMIC, kDYNAMIC};
  for (int i = 0; i < 2; ++i) {
    const int64_t in = x.dims[2 + i];
    if (!known(in)) continue;
    const int64_t extent = p.dilation[i] * (w.dims[2 + i] - 1) + 1;
    const int64_t padded = in + 2 * p.padding[i];
    BINDERY_EXPECT(padded >= extent, "conv2d kernel extent " + str(extent) + " (kernel " +
                                         str(w.dims) + ", dilation " + str(p.dilation) +
                                         ") is larger than the padded input " + str(padded) +
                                         " (input " + str(x.dims) + ", padding " + str(p.padding) +
                                         ")");
    out[2 + i] = (padded - extent) / p.stride[i] + 1;
  }
  return {DataType::kFLOAT, out};
}

TensorDesc infer_batchnorm(std::span<const TensorDesc> in) {
  const TensorDesc& x = in[0];
  expect_float(x, "batchnorm input");
  expect_min_rank(x, 2, "batchnorm input");
  static const char* names[] = {"batchnorm scale", "batchnorm bias", "batchnorm mean",
                                "batchnorm var"};
  for (int i = 0; i < 4; ++i) expect_vector(in[1 + i], x.dims[1], names[i], "dim 1", x.dims);
  return {DataType::kFLOAT, x.dims};
}

TensorDesc infer_pooling(const PoolingParams& p, const TensorDesc& x) {
  expect_float(x, "pooling input");
  expect_rank(x, 4, "pooling input (NCHW)");
  expect_pair(p.window, 1, "pooling window");
  expect_pair(p.stride, 1, "pooling stride");
  expect_pair(p.padding, 0, "pooling padding");
  Dims out = x.dims;
  for (int i = 0; i < 2; ++i) {
    BINDERY_EXPECT(
        p.padding[i] < p.window[i],
        "pooling padding " + str(p.padding) + " must be smaller than the window " + str(p.window));
    const int64_t in = x.dims[2 + i];
    if (!known(in)) continue;
    const int64_t padded = in + 2 * p.padding[i];
    BINDERY_EXPECT(padded >= p.window[i], "pooling window " + str(p.window) +
                                              " is larger than the padded input (input " +
                                              str(x.dims) + ", padding " + str(p.padding) + ")");
    out[2 + i] = (padded - p.window[i]) / p.stride[i] + 1;
  }
  return {DataType::kFLOAT, out};
}

std::string arity_text(int lo, int hi) {
  if (lo == hi) return str(lo);
  if (hi == INT_MAX) return "at least " + str(lo);
  return str(lo) + " to " + str(hi);
}

}  // namespace

namespace {

// Positions and sequence ids: int32 or int64 vectors of the token count.
void expect_token_vector(const TensorDesc& d, const TensorDesc& x, const char* what) {
  BINDERY_EXPECT(d.dtype == DataType::kINT32 || d.dtype == DataType::kINT64,
                 std::string(what) + " must be i32 or i64, got " + dt(d.dtype));
  expect_rank(d, 1, what);
  BINDERY_EXPECT(
      !known(d.dims[0]) || !known(x.dims[0]) || d.dims[0] == x.dims[0],
      std::string(what) + " has " + str(d.dims[0]) + " entries for " + str(x.dims[0]) + " tokens");
}

TensorDesc infer_rotary(const RotaryParams& p, const TensorDesc& x, const TensorDesc& positions,
                        const TensorDesc* seq_ids) {
  expect_float(x, "rotary input");
  expect_rank(x, 2, "rotary input");
  const int64_t rotary_dim = 2 * static_cast<int64_t>(p.inv_freq.size());
  BINDERY_EXPECT(p.num_heads > 0 && p.head_dim > 0 && rotary_dim > 0 && rotary_dim <= p.head_dim,
                 "rotary needs heads > 0 and 0 < 2 * inv_freq.size() <= head_dim, got heads " +
                     str(p.num_heads) + ", head_dim " + str(p.head_dim) + ", rotary dims " +
                     str(rotary_dim));
  BINDERY_EXPECT(!known(x.dims[1]) || x.dims[1] == p.num_heads * p.head_dim,
                 "rotary input has " + str(x.dims[1]) + " features, expected heads " +
                     str(p.num_heads) + " x head_dim " + str(p.head_dim));
  expect_token_vector(positions, x, "rotary positions");
  if (seq_ids) expect_token_vector(*seq_ids, x, "rotary seq_ids");
  BINDERY_EXPECT(p.dynamic_factor == 0 || (p.dynamic_max_positions > 0 && rotary_dim > 2),
                 "dynamic rotary scaling needs dynamic_max_positions > 0 and rotary dims > 2");
  return {DataType::kFLOAT, x.dims};
}

TensorDesc infer_attention(const AttentionParams& p, std::span<const TensorDesc> in) {
  BINDERY_EXPECT(p.num_heads > 0 && p.num_kv_heads > 0 && p.head_dim > 0 &&
                     p.num_heads % p.num_kv_heads == 0 && p.max_seq_len > 0 &&
                     p.sliding_window >= 0 && p.cache_index >= 0,
                 "attention needs heads a multiple of kv heads, head_dim > 0, max_seq_len > 0; "
                 "got heads " +
                     str(p.num_heads) + ", kv heads " + str(p.num_kv_heads) + ", head_dim " +
                     str(p.head_dim) + ", max_seq_len " + str(p.max_seq_len));
  const char* names[] = {"attention q", "attention k", "attention v"};
  const int64_t widths[] = {p.num_heads * p.head_dim, p.num_kv_heads * p.head_dim,
                            p.num_kv_heads * p.head_dim};
  for (int i = 0; i < 3; ++i) {
    expect_float(in[i], names[i]);
    expect_rank(in[i], 2, names[i]);
    BINDERY_EXPECT(!known(in[i].dims[1]) || in[i].dims[1] == widths[i],
                   std::string(names[i]) + " has " + str(in[i].dims[1]) + " features, expected " +
                       str(widths[i]));
    BINDERY_EXPECT(!known(in[i].dims[0]) || !known(in[0].dims[0]) || in[i].dims[0] == in[0].dims[0],
                   std::string(names[i]) + " has " + str(in[i].dims[0]) + " tokens, q has " +
                       str(in[0].dims[0]));
  }
  expect_token_vector(in[3], in[0], "attention positions");
  expect_token_vector(in[4], in[0], "attention seq_ids");
  return {DataType::kFLOAT, {in[0].dims[0], widths[0]}};
}

// x [T, H], router_logits [T, E], gate_up [E*2F, H], down [E*H, F]. The stacked weights must
// have static dims (they are weights); H may come from them when x's is dynamic.
TensorDesc infer_moe(const MoeParams& p, std::span<const TensorDesc> in) {
  const int64_t e = p.num_experts, f = p.ffn_size;
  BINDERY_EXPECT(e > 0 && p.top_k > 0 && p.top_k <= e && f > 0,
                 "moe needs experts > 0, 0 < top_k <= experts and ffn_size > 0; got experts " +
                     str(e) + ", top_k " + str(p.top_k) + ", ffn_size " + str(f));
  const char* names[] = {"moe input", "moe router_logits", "moe gate_up", "moe down"};
  for (int i = 0; i < 4; ++i) {
    expect_float(in[i], names[i]);
    expect_rank(in[i], 2, names[i]);
  }
  const TensorDesc &x = in[0], &logits = in[1], &gate_up = in[2], &down = in[3];
  BINDERY_EXPECT(agree(logits.dims[0], x.dims[0]),
                 "moe router_logits " + str(logits.dims) + " has " + str(logits.dims[0]) +
                     " rows for " + str(x.dims[0]) + " tokens (input " + str(x.dims) + ")");
  BINDERY_EXPECT(agree(logits.dims[1], e), "moe router_logits " + str(logits.dims) + " has " +
                                               str(logits.dims[1]) + " columns for " + str(e) +
                                               " experts");
  BINDERY_EXPECT(!is_dynamic(gate_up.dims) && !is_dynamic(down.dims),
                 "moe gate_up " + str(gate_up.dims) + " and down " + str(down.dims) +
                     " must have static dims");
  const int64_t h = gate_up.dims[1];
  BINDERY_EXPECT(gate_up.dims[0] == e * 2 * f && agree(x.dims[1], h),
                 "moe gate_up must be [experts * 2 * ffn_size, hidden] = [" + str(e * 2 * f) +
                     ", " + str(x.dims[1]) + "] (experts " + str(e) + ", ffn_size " + str(f) +
                     ", input " + str(x.dims) + "), got " + str(gate_up.dims));
  BINDERY_EXPECT(down.dims[0] == e * h && down.dims[1] == f,
                 "moe down must be [experts * hidden, ffn_size] = [" + str(e * h) + ", " + str(f) +
                     "] (experts " + str(e) + ", hidden " + str(h) + "), got " + str(down.dims));
  return {DataType::kFLOAT, {x.dims[0], h}};
}

// x [..., in] float, qweight i32 [in/8, out], qzeros i32 [G, out/8], scales float [G, out],
// g_idx i32 [in] → f32 [..., out]. The packed tensors are weights: static dims.
TensorDesc infer_matmul_int4(const Int4MatmulParams& p, std::span<const TensorDesc> in) {
  const int64_t n = p.in_features, m = p.out_features, g = p.group_count;
  BINDERY_EXPECT(n > 0 && m > 0 && n % 8 == 0 && m % 8 == 0 && g > 0 && g <= n &&
                     (p.zero_offset == 0 || p.zero_offset == 1),
                 "matmul_int4 needs in_features and out_features positive multiples of 8, "
                 "0 < group_count <= in_features and zero_offset 0 or 1; got in " +
                     str(n) + ", out " + str(m) + ", groups " + str(g) + ", zero_offset " +
                     str(p.zero_offset));
  expect_float(in[0], "matmul_int4 input");
  BINDERY_EXPECT(!in[0].dims.empty() && agree(in[0].dims.back(), n),
                 "matmul_int4 input " + str(in[0].dims) + " must end in in_features " + str(n));
  const Dims want[] = {{n / 8, m}, {g, m / 8}, {g, m}, {n}};
  const char* names[] = {"qweight", "qzeros", "scales", "g_idx"};
  for (int i = 0; i < 4; ++i) {
    const TensorDesc& t = in[i + 1];
    BINDERY_EXPECT(i == 2 ? is_floating(t.dtype) : t.dtype == DataType::kINT32,
                   std::string("matmul_int4 ") + names[i] + " must be " +
                       (i == 2 ? "float" : "int32") + ", got " + dt(t.dtype));
    BINDERY_EXPECT(t.dims == want[i], std::string("matmul_int4 ") + names[i] + " must be " +
                                          str(want[i]) + ", got " + str(t.dims));
  }
  Dims out = in[0].dims;
  out.back() = m;
  return {DataType::kFLOAT, out};
}

}  // namespace

std::vector<TensorDesc> infer_outputs(LayerType type, const LayerParams& params,
                                      std::span<const TensorDesc> inputs) {
  if (type == LayerType::kCONSTANT) return {};
  const std::string_view name = layer_type_name(type);
  const auto [lo, hi] = input_arity(type);
  const int n = static_cast<int>(inputs.size());
  BINDERY_EXPECT(n >= lo && n <= hi,
                 std::string(name) + " takes " + arity_text(lo, hi) + " inputs, got " + str(n));
  for (size_t i = 0; i < inputs.size(); ++i) {
    const TensorDesc& d = inputs[i];
    const auto what = [&] { return std::string(name) + " input " + str(i); };
    if (is_absent(d)) {
      BINDERY_EXPECT(is_optional_input(type, i), what() + " is required but absent");
      continue;
    }
    for (int64_t x : d.dims)
      BINDERY_EXPECT(x >= kDYNAMIC, what() + " has invalid dims " + str(d.dims) +
                                        " (expected >= 0, or -1 for dynamic)");
    BINDERY_EXPECT(d.dtype != DataType::kINT4,
                   what() + " is int4 (packed); no layer reads int4 tensors");
  }
  const auto optional = [&](size_t i) -> const TensorDesc* {
    return i < inputs.size() && !is_absent(inputs[i]) ? &inputs[i] : nullptr;
  };

  switch (type) {
    case LayerType::kCONSTANT: return {};
    case LayerType::kMATMUL:
      return {infer_matmul(params_as<MatMulParams>(type, params), inputs[0], inputs[1])};
    case LayerType::kELEMENTWISE:
      params_as<ElementwiseParams>(type, params);
      expect_float(inputs[0], "elementwise input a");
      expect_float(inputs[1], "elementwise input b");
      return {{DataType::kFLOAT, broadcast(inputs[0].dims, inputs[1].dims, "elementwise inputs")}};
    case LayerType::kUNARY:
      params_as<UnaryParams>(type, params);
      expect_float(inputs[0], "unary input");
      return {{DataType::kFLOAT, inputs[0].dims}};
    case LayerType::kSOFTMAX: {
      const auto& p = params_as<SoftmaxParams>(type, params);
      expect_float(inputs[0], "softmax input");
      expect_min_rank(inputs[0], 1, "softmax input");
      normalize_axis(p.axis, inputs[0].dims.size(), "softmax");
      return {{DataType::kFLOAT, inputs[0].dims}};
    }
    case LayerType::kREDUCE:
      return {infer_reduce(params_as<ReduceParams>(type, params), inputs[0])};
    case LayerType::kRMSNORM:
      params_as<NormParams>(type, params);
      return {infer_norm(type, inputs[0], inputs[1], nullptr)};
    case LayerType::kLAYERNORM:
      params_as<NormParams>(type, params);
      return {infer_norm(type, inputs[0], inputs[1], optional(2))};
    case LayerType::kGATHER:
      return {infer_gather(params_as<GatherParams>(type, params), inputs[0], inputs[1])};
    case LayerType::kRESHAPE:
      return {infer_reshape(params_as<ReshapeParams>(type, params), inputs[0])};
    case LayerType::kTRANSPOSE:
      return {infer_transpose(params_as<TransposeParams>(type, params), inputs[0])};
    case LayerType::kCONCAT: return {infer_concat(params_as<ConcatParams>(type, params), inputs)};
    case LayerType::kSLICE: return {infer_slice(params_as<SliceParams>(type, params), inputs[0])};
    case LayerType::kCAST: {
      const auto& p = params_as<CastParams>(type, params);
      BINDERY_EXPECT(
          p.to != DataType::kINT4 && dtype_name(p.to) != "unknown",
          "cast target must be f32, f16, bf16, i8, u8, i32, i64 or bool, got " + dt(p.to));
      return {{p.to, inputs[0].dims}};
    }
    case LayerType::kCONVOLUTION:
      return {infer_conv(params_as<ConvParams>(type, params), inputs[0], inputs[1], optional(2))};
    case LayerType::kBATCHNORM:
      params_as<BatchNormParams>(type, params);
      return {infer_batchnorm(inputs)};
    case LayerType::kPOOLING:
      return {infer_pooling(params_as<PoolingParams>(type, params), inputs[0])};
    case LayerType::kROTARY:
      return {
          infer_rotary(params_as<RotaryParams>(type, params), inputs[0], inputs[1], optional(2))};
    case LayerType::kATTENTION:
      return {infer_attention(params_as<AttentionParams>(type, params), inputs)};
    case LayerType::kMOE: return {infer_moe(params_as<MoeParams>(type, params), inputs)};
    case LayerType::kMATMUL_INT4:
      return {infer_matmul_int4(params_as<Int4MatmulParams>(type, params), inputs)};
    case LayerType::kALL_REDUCE:
    case LayerType::kALL_GATHER:
      return {infer_collective(type, params_as<CollectiveParams>(type, params), inputs[0])};
  }
  fail("unknown layer type " + str(static_cast<int>(type)));
}

#undef BINDERY_EXPECT

}  // namespace bindery

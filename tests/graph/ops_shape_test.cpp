// Shape inference (infer_outputs) for every layer type: output dims and dtypes, dynamic-dim
// propagation, and one named kINVALID_NETWORK error for each kind of bad input.

#include <gtest/gtest.h>

#include <initializer_list>
#include <string>
#include <vector>

#include "bindery/error.h"
#include "bindery/network.h"
#include "bindery/ops.h"

namespace bindery {
namespace {

constexpr int64_t D = kDYNAMIC;

TensorDesc f32(Dims d) { return {DataType::kFLOAT, std::move(d)}; }
TensorDesc of(DataType t, Dims d) { return {t, std::move(d)}; }

TensorDesc infer1(LayerType type, const LayerParams& params, std::vector<TensorDesc> in) {
  const auto out = infer_outputs(type, params, in);
  EXPECT_EQ(out.size(), 1u);
  return out.empty() ? TensorDesc{} : out[0];
}

/// Expects kINVALID_NETWORK whose message contains every string in `parts`.
void expect_invalid(LayerType type, const LayerParams& params, std::vector<TensorDesc> in,
                    std::initializer_list<std::string> parts) {
  try {
    infer_outputs(type, params, in);
    ADD_FAILURE() << layer_type_name(type) << ": expected kINVALID_NETWORK, got no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kINVALID_NETWORK) << e.what();
    for (const auto& p : parts)
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos)
          << "message '" << e.what() << "' lacks '" << p << "'";
  }
}

// ---- vocabulary ----

TEST(OpsVocabulary, NamesAreStable) {
  EXPECT_EQ(layer_type_name(LayerType::kCONVOLUTION), "conv2d");
  EXPECT_EQ(layer_type_name(LayerType::kLAYERNORM), "layernorm");
  EXPECT_EQ(layer_type_name(LayerType::kPOOLING), "pooling");
  EXPECT_EQ(elementwise_op_name(ElementwiseOp::kPROD), "mul");
  EXPECT_EQ(elementwise_op_name(ElementwiseOp::kSUM), "add");
  EXPECT_EQ(unary_op_name(UnaryOp::kGELU_TANH), "gelu_tanh");
  EXPECT_EQ(unary_op_name(UnaryOp::kRSQRT), "rsqrt");
  EXPECT_EQ(reduce_op_name(ReduceOp::kAVG), "mean");
  EXPECT_EQ(pooling_type_name(PoolingType::kAVERAGE), "avg");
}

TEST(OpsVocabulary, DefaultParamsMatchTheirLayerType) {
  for (int t = 0; t <= static_cast<int>(LayerType::kALL_GATHER); ++t) {
    const auto type = static_cast<LayerType>(t);
    EXPECT_TRUE(params_match(type, default_params(type))) << layer_type_name(type);
  }
  EXPECT_TRUE(params_match(LayerType::kRMSNORM, NormParams{}));
  EXPECT_TRUE(params_match(LayerType::kLAYERNORM, NormParams{}));
  EXPECT_TRUE(params_match(LayerType::kCONVOLUTION, ConvParams{}));
  EXPECT_FALSE(params_match(LayerType::kMATMUL, ConvParams{}));
  EXPECT_FALSE(params_match(LayerType::kCONSTANT, NormParams{}));
}

TEST(OpsVocabulary, InputArityCoversOptionalAndVariadicInputs) {
  EXPECT_EQ(input_arity(LayerType::kMATMUL), std::make_pair(2, 2));
  EXPECT_EQ(input_arity(LayerType::kLAYERNORM), std::make_pair(2, 3));
  EXPECT_EQ(input_arity(LayerType::kCONVOLUTION), std::make_pair(2, 3));
  EXPECT_EQ(input_arity(LayerType::kBATCHNORM), std::make_pair(5, 5));
  EXPECT_EQ(input_arity(LayerType::kCONCAT).first, 1);
  EXPECT_GT(input_arity(LayerType::kCONCAT).second, 1000);
}

TEST(OpsShape, WrongParamsAlternativeIsInvalid) {
  expect_invalid(LayerType::kMATMUL, ConvParams{}, {f32({2, 3}), f32({3, 4})},
                 {"MatMulParams", "ConvParams"});
}

TEST(OpsShape, ArityAndAbsentInputsAreChecked) {
  expect_invalid(LayerType::kMATMUL, MatMulParams{}, {f32({2, 3})}, {"takes 2", "got 1"});
  expect_invalid(LayerType::kUNARY, UnaryParams{}, {f32({2}), f32({2})}, {"takes 1", "got 2"});
  expect_invalid(LayerType::kCONCAT, ConcatParams{}, {}, {"at least 1", "got 0"});
  expect_invalid(LayerType::kRMSNORM, NormParams{}, {f32({2, 4}), kABSENT_DESC},
                 {"input 1", "required but absent"});
  expect_invalid(LayerType::kUNARY, UnaryParams{}, {f32({2, -3})}, {"invalid dims", "[2, -3]"});
  expect_invalid(LayerType::kRESHAPE, ReshapeParams{{4}}, {of(DataType::kINT4, {4})}, {"int4"});
}

TEST(OpsShape, AbsentDescIsDistinctFromAScalar) {
  EXPECT_TRUE(is_absent(kABSENT_DESC));
  EXPECT_FALSE(is_absent(TensorDesc{}));
  EXPECT_FALSE(is_absent(f32({2})));
}

// ---- matmul ----

TEST(OpsShape, MatmulBroadcastsBatchDimsAndAppliesTransposes) {
  EXPECT_EQ(infer1(LayerType::kMATMUL, MatMulParams{}, {f32({2, 3}), f32({3, 5})}).dims,
            (Dims{2, 5}));
  EXPECT_EQ(infer1(LayerType::kMATMUL, MatMulParams{true, false}, {f32({3, 2}), f32({3, 5})}).dims,
            (Dims{2, 5}));
  EXPECT_EQ(infer1(LayerType::kMATMUL, MatMulParams{false, true}, {f32({2, 3}), f32({5, 3})}).dims,
            (Dims{2, 5}));
  EXPECT_EQ(infer1(LayerType::kMATMUL, MatMulParams{}, {f32({4, 1, 2, 3}), f32({6, 3, 5})}).dims,
            (Dims{4, 6, 2, 5}));
  EXPECT_EQ(infer1(LayerType::kMATMUL, MatMulParams{}, {f32({7, 2, 3}), f32({3, 5})}).dims,
            (Dims{7, 2, 5}));
}

TEST(OpsShape, MatmulPropagatesDynamicDimsAndWidensToFloat) {
  const auto out = infer1(LayerType::kMATMUL, MatMulParams{false, true},
                          {of(DataType::kBF16, {D, D, 8}), of(DataType::kHALF, {16, 8})});
  EXPECT_EQ(out.dtype, DataType::kFLOAT);
  EXPECT_EQ(out.dims, (Dims{D, D, 16}));
  // Unknown K on one side is accepted; a dynamic batch dim broadcast against 3 becomes 3.
  EXPECT_EQ(infer1(LayerType::kMATMUL, MatMulParams{}, {f32({D, 2, D}), f32({3, 4, 5})}).dims,
            (Dims{3, 2, 5}));
}

TEST(OpsShape, MatmulRejectsInnerDimMismatch) {
  expect_invalid(LayerType::kMATMUL, MatMulParams{}, {f32({2, 3}), f32({4, 5})},
                 {"matmul inner dims differ", "a is [2, 3]", "(K=3)", "b is [4, 5]", "(K=4)"});
}

TEST(OpsShape, MatmulRejectsRankOneBadBatchAndIntegerInputs) {
  expect_invalid(LayerType::kMATMUL, MatMulParams{}, {f32({3}), f32({3, 5})},
                 {"input a", "rank >= 2", "[3]"});
  expect_invalid(LayerType::kMATMUL, MatMulParams{}, {f32({2, 2, 3}), f32({4, 3, 5})},
                 {"batch dims", "do not broadcast", "2 vs 4"});
  expect_invalid(LayerType::kMATMUL, MatMulParams{}, {of(DataType::kINT32, {2, 3}), f32({3, 5})},
                 {"f32, f16 or bf16", "i32"});
}

// ---- elementwise, unary, softmax, reduce ----

TEST(OpsShape, ElementwiseBroadcastsLikeNumpy) {
  const ElementwiseParams add{ElementwiseOp::kSUM};
  EXPECT_EQ(infer1(LayerType::kELEMENTWISE, add, {f32({2, 3}), f32({3})}).dims, (Dims{2, 3}));
  EXPECT_EQ(infer1(LayerType::kELEMENTWISE, add, {f32({2, 1, 4}), f32({3, 1})}).dims,
            (Dims{2, 3, 4}));
  EXPECT_EQ(infer1(LayerType::kELEMENTWISE, add, {f32({}), f32({5})}).dims, (Dims{5}));
  EXPECT_EQ(infer1(LayerType::kELEMENTWISE, add, {of(DataType::kHALF, {2}), f32({2})}).dtype,
            DataType::kFLOAT);
}

TEST(OpsShape, ElementwiseBroadcastResolvesDynamicDims) {
  const ElementwiseParams mul{ElementwiseOp::kPROD};
  // dynamic vs known > 1 -> known; dynamic vs 1 -> dynamic; dynamic vs dynamic -> dynamic.
  EXPECT_EQ(infer1(LayerType::kELEMENTWISE, mul, {f32({D, D, D}), f32({4, 1, D})}).dims,
            (Dims{4, D, D}));
}

TEST(OpsShape, ElementwiseRejectsIncompatibleShapes) {
  expect_invalid(LayerType::kELEMENTWISE, ElementwiseParams{}, {f32({2, 3}), f32({4})},
                 {"do not broadcast", "[2, 3]", "[4]", "3 vs 4"});
  expect_invalid(LayerType::kELEMENTWISE, ElementwiseParams{},
                 {f32({2}), of(DataType::kINT64, {2})}, {"input b", "i64"});
}

TEST(OpsShape, UnaryKeepsDimsAndComputesFloat) {
  const auto out =
      infer1(LayerType::kUNARY, UnaryParams{UnaryOp::kSILU}, {of(DataType::kBF16, {D, 7})});
  EXPECT_EQ(out.dtype, DataType::kFLOAT);
  EXPECT_EQ(out.dims, (Dims{D, 7}));
  expect_invalid(LayerType::kUNARY, UnaryParams{}, {of(DataType::kBOOL, {2})}, {"bool"});
}

TEST(OpsShape, SoftmaxChecksAxis) {
  EXPECT_EQ(infer1(LayerType::kSOFTMAX, SoftmaxParams{-1}, {f32({2, D})}).dims, (Dims{2, D}));
  EXPECT_EQ(infer1(LayerType::kSOFTMAX, SoftmaxParams{0}, {f32({2, 3})}).dims, (Dims{2, 3}));
  expect_invalid(LayerType::kSOFTMAX, SoftmaxParams{2}, {f32({2, 3})},
                 {"softmax axis 2", "rank 2"});
  expect_invalid(LayerType::kSOFTMAX, SoftmaxParams{-3}, {f32({2, 3})}, {"axis -3"});
}

TEST(OpsShape, ReduceDropsOrKeepsReducedAxes) {
  EXPECT_EQ(
      infer1(LayerType::kREDUCE, ReduceParams{ReduceOp::kSUM, {1}, false}, {f32({2, 3, 4})}).dims,
      (Dims{2, 4}));
  EXPECT_EQ(
      infer1(LayerType::kREDUCE, ReduceParams{ReduceOp::kAVG, {-1, 0}, true}, {f32({D, 3, 4})})
          .dims,
      (Dims{1, 3, 1}));
  EXPECT_EQ(
      infer1(LayerType::kREDUCE, ReduceParams{ReduceOp::kMAX, {0, 1}, false}, {f32({2, 3})}).dims,
      (Dims{}));
}

TEST(OpsShape, ReduceRejectsBadAxes) {
  expect_invalid(LayerType::kREDUCE, ReduceParams{ReduceOp::kSUM, {3}, false}, {f32({2, 3})},
                 {"reduce axis 3", "rank 2"});
  expect_invalid(LayerType::kREDUCE, ReduceParams{ReduceOp::kSUM, {1, -1}, false}, {f32({2, 3})},
                 {"listed twice"});
  expect_invalid(LayerType::kREDUCE, ReduceParams{ReduceOp::kSUM, {}, false}, {f32({2, 3})},
                 {"at least one axis"});
}

// ---- norms ----

TEST(OpsShape, RmsNormChecksWeightAgainstLastDim) {
  EXPECT_EQ(infer1(LayerType::kRMSNORM, NormParams{}, {f32({D, 8}), of(DataType::kBF16, {8})}).dims,
            (Dims{D, 8}));
  EXPECT_EQ(infer1(LayerType::kRMSNORM, NormParams{}, {f32({2, D}), f32({8})}).dims, (Dims{2, D}));
  expect_invalid(LayerType::kRMSNORM, NormParams{}, {f32({2, 8}), f32({4})},
                 {"rmsnorm weight", "[8]", "got [4]"});
  expect_invalid(LayerType::kRMSNORM, NormParams{}, {f32({2, 8}), f32({1, 8})},
                 {"1-D", "got [1, 8]"});
}

TEST(OpsShape, LayerNormBiasIsOptional) {
  EXPECT_EQ(infer1(LayerType::kLAYERNORM, NormParams{}, {f32({3, 8}), f32({8})}).dims,
            (Dims{3, 8}));
  EXPECT_EQ(infer1(LayerType::kLAYERNORM, NormParams{}, {f32({3, 8}), f32({8}), kABSENT_DESC}).dims,
            (Dims{3, 8}));
  EXPECT_EQ(infer1(LayerType::kLAYERNORM, NormParams{}, {f32({3, 8}), f32({8}), f32({8})}).dims,
            (Dims{3, 8}));
  expect_invalid(LayerType::kLAYERNORM, NormParams{}, {f32({3, 8}), f32({8}), f32({3})},
                 {"layernorm bias", "got [3]"});
}

// ---- data movement ----

TEST(OpsShape, GatherSplicesIndexDimsIntoData) {
  const auto emb = infer1(LayerType::kGATHER, GatherParams{0},
                          {of(DataType::kBF16, {100, 16}), of(DataType::kINT32, {D, D})});
  EXPECT_EQ(emb.dims, (Dims{D, D, 16}));
  EXPECT_EQ(emb.dtype, DataType::kFLOAT);  // reduced-precision weights are widened
  const auto mid = infer1(LayerType::kGATHER, GatherParams{1},
                          {of(DataType::kINT64, {2, 5, 3}), of(DataType::kINT64, {4})});
  EXPECT_EQ(mid.dims, (Dims{2, 4, 3}));
  EXPECT_EQ(mid.dtype, DataType::kINT64);
  expect_invalid(LayerType::kGATHER, GatherParams{0}, {f32({10, 4}), f32({3})},
                 {"indices", "i32 or i64", "got f32"});
  expect_invalid(LayerType::kGATHER, GatherParams{2}, {f32({10, 4}), of(DataType::kINT32, {3})},
                 {"gather axis 2"});
}

TEST(OpsShape, ReshapeCopiesZerosAndInfersMinusOne) {
  EXPECT_EQ(infer1(LayerType::kRESHAPE, ReshapeParams{{0, -1}}, {f32({2, 3, 4})}).dims,
            (Dims{2, 12}));
  EXPECT_EQ(
      infer1(LayerType::kRESHAPE, ReshapeParams{{4, 6}}, {of(DataType::kHALF, {2, 12})}).dtype,
      DataType::kHALF);
  // Dynamic dims copied by 0 cancel out, so -1 is still inferred.
  EXPECT_EQ(infer1(LayerType::kRESHAPE, ReshapeParams{{0, 0, 4, -1}}, {f32({D, D, 32})}).dims,
            (Dims{D, D, 4, 8}));
  // A dynamic dim that is not copied makes -1 dynamic.
  EXPECT_EQ(infer1(LayerType::kRESHAPE, ReshapeParams{{-1, 32}}, {f32({D, 4, 8})}).dims,
            (Dims{D, 32}));
}

TEST(OpsShape, ReshapeRejectsBadShapes) {
  expect_invalid(LayerType::kRESHAPE, ReshapeParams{{5, 5}}, {f32({2, 12})},
                 {"element count", "24", "25"});
  expect_invalid(LayerType::kRESHAPE, ReshapeParams{{-1, -1}}, {f32({2, 12})},
                 {"more than one -1"});
  expect_invalid(LayerType::kRESHAPE, ReshapeParams{{-1, 5}}, {f32({2, 12})},
                 {"cannot infer -1", "24", "5"});
  expect_invalid(LayerType::kRESHAPE, ReshapeParams{{-3, 8}}, {f32({2, 12})}, {"invalid dim -3"});
  expect_invalid(LayerType::kRESHAPE, ReshapeParams{{0, 0, 0}}, {f32({2, 12})},
                 {"copies dim 2", "rank 2"});
}

TEST(OpsShape, TransposePermutesDims) {
  EXPECT_EQ(infer1(LayerType::kTRANSPOSE, TransposeParams{{0, 2, 1, 3}}, {f32({D, 5, 4, 8})}).dims,
            (Dims{D, 4, 5, 8}));
  expect_invalid(LayerType::kTRANSPOSE, TransposeParams{{0, 0, 1}}, {f32({1, 2, 3})},
                 {"not a permutation", "entry 1 is 0"});
  expect_invalid(LayerType::kTRANSPOSE, TransposeParams{{1, 0}}, {f32({1, 2, 3})},
                 {"2 entries", "rank 3"});
}

TEST(OpsShape, ConcatSumsAxisAndMatchesOtherDims) {
  EXPECT_EQ(
      infer1(LayerType::kCONCAT, ConcatParams{-1}, {f32({2, 3}), f32({2, 5}), f32({2, 1})}).dims,
      (Dims{2, 9}));
  EXPECT_EQ(infer1(LayerType::kCONCAT, ConcatParams{0}, {f32({D, 3}), f32({2, D})}).dims,
            (Dims{D, 3}));
  EXPECT_EQ(infer1(LayerType::kCONCAT, ConcatParams{0}, {of(DataType::kINT8, {4})}).dtype,
            DataType::kINT8);
  expect_invalid(LayerType::kCONCAT, ConcatParams{1}, {f32({2, 3}), f32({4, 5})},
                 {"input 1 [4, 5]", "dim 0", "only axis 1"});
  expect_invalid(LayerType::kCONCAT, ConcatParams{0}, {f32({2, 3}), f32({2})}, {"rank"});
  expect_invalid(LayerType::kCONCAT, ConcatParams{0}, {f32({2}), of(DataType::kHALF, {2})},
                 {"dtype f16", "input 0 has f32"});
}

TEST(OpsShape, SliceTakesSizesStridesAndToTheEnd) {
  EXPECT_EQ(infer1(LayerType::kSLICE, SliceParams{{0, 1}, {2, 3}, {}}, {f32({4, 5})}).dims,
            (Dims{2, 3}));
  EXPECT_EQ(infer1(LayerType::kSLICE, SliceParams{{1, 0}, {3, 2}, {2, 1}}, {f32({7, 5})}).dims,
            (Dims{3, 2}));
  // size -1: to the end (ceil((dim - start) / stride)); dynamic dims stay dynamic.
  EXPECT_EQ(
      infer1(LayerType::kSLICE, SliceParams{{0, 0, 4}, {-1, -1, 4}, {}}, {f32({D, 6, 12})}).dims,
      (Dims{D, 6, 4}));
  EXPECT_EQ(infer1(LayerType::kSLICE, SliceParams{{1}, {-1}, {2}}, {f32({6})}).dims, (Dims{3}));
}

TEST(OpsShape, SliceRejectsOutOfBoundsAndBadParams) {
  expect_invalid(LayerType::kSLICE, SliceParams{{0, 3}, {2, 3}, {}}, {f32({4, 5})},
                 {"reads index 5", "past the end 5", "dim 1"});
  expect_invalid(LayerType::kSLICE, SliceParams{{0}, {2}, {0}}, {f32({4})},
                 {"stride must be >= 1"});
  expect_invalid(LayerType::kSLICE, SliceParams{{0}, {2, 2}, {}}, {f32({4})},
                 {"one entry per input dim"});
  expect_invalid(LayerType::kSLICE, SliceParams{{-1}, {2}, {}}, {f32({4})}, {"start must be >= 0"});
}

TEST(OpsShape, CastGivesTargetDtype) {
  const auto out =
      infer1(LayerType::kCAST, CastParams{DataType::kHALF}, {of(DataType::kINT64, {D, 3})});
  EXPECT_EQ(out.dtype, DataType::kHALF);
  EXPECT_EQ(out.dims, (Dims{D, 3}));
  expect_invalid(LayerType::kCAST, CastParams{DataType::kINT4}, {f32({2})}, {"int4"});
}

// ---- convolution, batch norm, pooling ----

TEST(OpsShape, ConvOutputSizeFollowsStridePaddingDilation) {
  ConvParams p;
  p.stride = {2, 1};
  p.padding = {1, 2};
  p.dilation = {1, 2};
  // H: (9 + 2 - 2 - 1) / 2 + 1 = 5; W: (10 + 4 - 4 - 1) / 1 + 1 = 10.
  EXPECT_EQ(infer1(LayerType::kCONVOLUTION, p, {f32({2, 4, 9, 10}), f32({6, 4, 3, 3})}).dims,
            (Dims{2, 6, 5, 10}));
  p = ConvParams{};
  p.groups = 2;
  const auto out =
      infer1(LayerType::kCONVOLUTION, p,
             {f32({D, 4, D, 7}), of(DataType::kHALF, {6, 2, 3, 3}), of(DataType::kBF16, {6})});
  EXPECT_EQ(out.dims, (Dims{D, 6, D, 5}));
  EXPECT_EQ(out.dtype, DataType::kFLOAT);
  EXPECT_EQ(infer1(LayerType::kCONVOLUTION, ConvParams{},
                   {f32({1, 3, 5, 5}), f32({8, 3, 1, 1}), kABSENT_DESC})
                .dims,
            (Dims{1, 8, 5, 5}));
}

TEST(OpsShape, ConvRejectsBadChannelsGroupsAndParams) {
  ConvParams p;
  expect_invalid(LayerType::kCONVOLUTION, p, {f32({1, 4, 8, 8}), f32({6, 3, 3, 3})},
                 {"kernel [6, 3, 3, 3]", "input [1, 4, 8, 8] has 4"});
  p.groups = 4;
  expect_invalid(LayerType::kCONVOLUTION, p, {f32({1, 4, 8, 8}), f32({6, 1, 3, 3})},
                 {"output channels 6", "groups 4"});
  p.groups = 3;
  expect_invalid(LayerType::kCONVOLUTION, p, {f32({1, 4, 8, 8}), f32({6, 1, 3, 3})},
                 {"input channels 4", "groups 3"});
  p = ConvParams{};
  expect_invalid(LayerType::kCONVOLUTION, p, {f32({1, 4, 8, 8}), f32({6, 4, 3, 3}), f32({4})},
                 {"conv2d bias", "[6]", "got [4]"});
  expect_invalid(LayerType::kCONVOLUTION, p, {f32({4, 8, 8}), f32({6, 4, 3, 3})},
                 {"rank 4", "[4, 8, 8]"});
  expect_invalid(LayerType::kCONVOLUTION, p, {f32({1, 4, 2, 2}), f32({6, 4, 3, 3})},
                 {"extent 3", "padded input 2"});
  p.stride = {1};
  expect_invalid(LayerType::kCONVOLUTION, p, {f32({1, 4, 8, 8}), f32({6, 4, 3, 3})},
                 {"stride must have 2 entries"});
  p = ConvParams{};
  p.epilogue.push_back({false, UnaryOp::kRELU, ElementwiseOp::kMAX, {0.f, 1.f}});
  expect_invalid(LayerType::kCONVOLUTION, p, {f32({1, 4, 8, 8}), f32({6, 4, 3, 3})},
                 {"epilogue step 0", "2 constants", "expected 1 or 6"});
}

TEST(OpsShape, BatchNormChecksPerChannelParams) {
  const auto c = f32({3});
  EXPECT_EQ(infer1(LayerType::kBATCHNORM, BatchNormParams{}, {f32({D, 3, 4, 4}), c, c, c, c}).dims,
            (Dims{D, 3, 4, 4}));
  expect_invalid(LayerType::kBATCHNORM, BatchNormParams{}, {f32({2, 3, 4, 4}), c, c, f32({4}), c},
                 {"batchnorm mean", "[3]", "got [4]"});
  expect_invalid(LayerType::kBATCHNORM, BatchNormParams{}, {f32({3}), c, c, c, c}, {"rank >= 2"});
}

TEST(OpsShape, PoolingOutputSizeAndParams) {
  PoolingParams p;
  p.window = {3, 3};
  p.stride = {2, 2};
  p.padding = {1, 1};
  EXPECT_EQ(infer1(LayerType::kPOOLING, p, {f32({1, 2, 7, D})}).dims, (Dims{1, 2, 4, D}));
  p.padding = {3, 0};
  expect_invalid(LayerType::kPOOLING, p, {f32({1, 2, 7, 7})},
                 {"padding [3, 0]", "smaller than the window [3, 3]"});
  p = PoolingParams{};
  p.window = {4, 4};
  expect_invalid(LayerType::kPOOLING, p, {f32({1, 2, 3, 3})}, {"larger than the padded input"});
}

// ---- mixture of experts: x [T, H], router_logits [T, E], gate_up [E*2F, H], down [E*H, F] ----

TEST(OpsShape, MoeOutputsTokensByHidden) {
  const MoeParams p{4, 2, 16, UnaryOp::kSILU, true};
  const TensorDesc gate_up = of(DataType::kBF16, {4 * 2 * 16, 8});
  const TensorDesc down = of(DataType::kBF16, {4 * 8, 16});
  const TensorDesc y = infer1(LayerType::kMOE, p, {f32({D, 8}), f32({D, 4}), gate_up, down});
  EXPECT_EQ(y.dims, (Dims{D, 8}));
  EXPECT_EQ(y.dtype, DataType::kFLOAT);
  // A dynamic hidden dim is pinned by the stacked weights.
  EXPECT_EQ(infer1(LayerType::kMOE, p, {f32({3, D}), f32({3, 4}), gate_up, down}).dims,
            (Dims{3, 8}));
}

TEST(OpsShape, MatmulInt4KeepsLeadingDimsAndChecksThePackedShapes) {
  const Int4MatmulParams p{64, 32, 2, 1};
  const TensorDesc qw = of(DataType::kINT32, {8, 32}), qz = of(DataType::kINT32, {2, 4});
  const TensorDesc sc = of(DataType::kHALF, {2, 32}), g = of(DataType::kINT32, {64});
  const TensorDesc y = infer1(LayerType::kMATMUL_INT4, p, {f32({D, 64}), qw, qz, sc, g});
  EXPECT_EQ(y.dtype, DataType::kFLOAT);
  EXPECT_EQ(y.dims, (Dims{D, 32}));
  EXPECT_EQ(infer1(LayerType::kMATMUL_INT4, p, {f32({2, 3, 64}), qw, qz, sc, g}).dims,
            (Dims{2, 3, 32}));
  expect_invalid(LayerType::kMATMUL_INT4, p,
                 {f32({D, 64}), of(DataType::kINT32, {9, 32}), qz, sc, g},
                 {"qweight must be [8, 32]", "got [9, 32]"});
  expect_invalid(LayerType::kMATMUL_INT4, p,
                 {f32({D, 64}), qw, qz, of(DataType::kINT32, {2, 32}), g},
                 {"scales must be float", "i32"});
  expect_invalid(LayerType::kMATMUL_INT4, p, {f32({D, 48}), qw, qz, sc, g},
                 {"input [-1, 48]", "in_features 64"});
  expect_invalid(LayerType::kMATMUL_INT4, Int4MatmulParams{60, 32, 2, 1},
                 {f32({D, 60}), qw, qz, sc, g}, {"multiples of 8", "in 60"});
}

TEST(OpsShape, MoeRejectsBadParamsAndMismatchedInputs) {
  const MoeParams p{4, 2, 16, UnaryOp::kSILU, true};
  const TensorDesc x = f32({5, 8}), logits = f32({5, 4});
  const TensorDesc gate_up = f32({128, 8}), down = f32({32, 16});
  expect_invalid(LayerType::kMOE, MoeParams{4, 5, 16, UnaryOp::kSILU, true},
                 {x, logits, gate_up, down}, {"top_k 5", "experts 4"});
  expect_invalid(LayerType::kMOE, MoeParams{0, 1, 16, UnaryOp::kSILU, true},
                 {x, logits, gate_up, down}, {"experts 0"});
  expect_invalid(LayerType::kMOE, MoeParams{4, 2, 0, UnaryOp::kSILU, true},
                 {x, logits, gate_up, down}, {"ffn_size 0"});
  expect_invalid(LayerType::kMOE, p, {x, logits, gate_up}, {"takes 4", "got 3"});
  expect_invalid(LayerType::kMOE, p, {f32({5, 2, 4}), logits, gate_up, down},
                 {"moe input", "rank 2"});
  expect_invalid(LayerType::kMOE, p, {x, of(DataType::kINT32, {5, 4}), gate_up, down},
                 {"moe router_logits", "i32"});
  expect_invalid(LayerType::kMOE, p, {x, f32({6, 4}), gate_up, down},
                 {"router_logits [6, 4]", "6 rows for 5 tokens"});
  expect_invalid(LayerType::kMOE, p, {x, f32({5, 3}), gate_up, down}, {"3 columns for 4 experts"});
  expect_invalid(LayerType::kMOE, p, {x, logits, f32({96, 8}), down},
                 {"gate_up must be [experts * 2 * ffn_size, hidden] = [128, 8]", "got [96, 8]"});
  expect_invalid(LayerType::kMOE, p, {x, logits, f32({128, 7}), down}, {"= [128, 8]"});
  expect_invalid(LayerType::kMOE, p, {x, logits, gate_up, f32({32, 8})},
                 {"down must be [experts * hidden, ffn_size] = [32, 16]", "got [32, 8]"});
  expect_invalid(LayerType::kMOE, p, {x, logits, f32({D, 8}), down}, {"static dims"});
  expect_invalid(LayerType::kMOE, ConvParams{}, {x, logits, gate_up, down},
                 {"MoeParams", "ConvParams"});
}

// ---- the Network passes absent optional inputs as kABSENT_DESC ----

TEST(OpsShape, NetworkAcceptsAbsentOptionalBiases) {
  Network net;
  Tensor* x = net.add_input("x", DataType::kFLOAT, {1, 2, 5, 5});
  Tensor* w = net.add_constant(HostTensor::zeros(DataType::kFLOAT, {3, 2, 3, 3}), "w")->output(0);
  Layer* conv = net.add_convolution(x, w, nullptr, ConvParams{});
  EXPECT_EQ(conv->output(0)->dims(), (Dims{1, 3, 3, 3}));
  Tensor* g = net.add_constant(HostTensor::zeros(DataType::kFLOAT, {3}), "g")->output(0);
  Tensor* h = net.add_reshape(conv->output(0), {1, 27, 1})->output(0);
  Tensor* t = net.add_transpose(h, {0, 2, 1})->output(0);
  Tensor* s = net.add_slice(t, {0, 0, 0}, {1, 1, 3})->output(0);
  Layer* ln = net.add_layer_norm(s, g, nullptr, 1e-5f);
  EXPECT_EQ(ln->output(0)->dims(), (Dims{1, 1, 3}));
  net.mark_output(ln->output(0));
  EXPECT_NO_THROW(net.validate());
}

TEST(OpsShapes, CollectivesKeepOrGrowTheirInputAndTakeOnlyF32) {
  EXPECT_EQ(infer1(LayerType::kALL_REDUCE, CollectiveParams{4, -1}, {f32({-1, 64})}).dims,
            (Dims{-1, 64}));
  EXPECT_EQ(infer1(LayerType::kALL_GATHER, CollectiveParams{4, -1}, {f32({-1, 64})}).dims,
            (Dims{-1, 256}));
  EXPECT_EQ(infer1(LayerType::kALL_GATHER, CollectiveParams{2, 0}, {f32({3, 5})}).dims,
            (Dims{6, 5}));
  expect_invalid(LayerType::kALL_REDUCE, CollectiveParams{2, -1}, {of(DataType::kHALF, {3})},
                 {"all_reduce input must be f32"});
  expect_invalid(LayerType::kALL_GATHER, CollectiveParams{0, -1}, {f32({3})},
                 {"group_size must be >= 1"});
  expect_invalid(LayerType::kALL_GATHER, CollectiveParams{2, 2}, {f32({3, 4})}, {"axis"});
  expect_invalid(LayerType::kGATHER, GatherParams{0, -1, true},
                 {f32({5, 4}), of(DataType::kINT32, {3})}, {"index_offset must be >= 0"});
}

}  // namespace
}  // namespace bindery

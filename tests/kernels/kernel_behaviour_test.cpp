// Kernel contract beyond numerics: determinism (bitwise, whatever the thread count), named
// errors (out-of-range gather index, outputs that disagree with shape inference, unsupported
// dtypes), cast edge cases and numerical stability.

#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <limits>

#include "bindery/error.h"
#include "kernel_test_util.h"

namespace bindery::test {
namespace {

struct NodeCase {
  GraphNode node;
  std::vector<Buf> inputs;
};

/// Nodes large enough that every parallel loop really splits across threads.
std::vector<NodeCase> large_nodes() {
  std::mt19937 rng(3);
  const DataType f = DataType::kFLOAT;
  const auto rnd = [&](DataType t, Dims d) { return random_buf(t, std::move(d), rng, -2, 2); };
  Buf tokens(DataType::kINT32, {512});
  for (int i = 0; i < 512; ++i) tokens.as<int32_t>()[i] = (i * 37) % 1000;
  ConvParams conv;
  conv.padding = {1, 1};
  conv.epilogue = {{true, UnaryOp::kSILU, ElementwiseOp::kMAX, {}}};
  PoolingParams pool;
  pool.type = PoolingType::kAVERAGE;
  pool.window = {3, 3};
  pool.stride = {1, 1};
  pool.padding = {1, 1};
  // GPTQ int4: random packed words, 8 groups scattered over the inputs (desc_act).
  Buf qweight(DataType::kINT32, {256 / 8, 320}), qzeros(DataType::kINT32, {8, 320 / 8});
  Buf g_idx(DataType::kINT32, {256});
  for (int64_t i = 0; i < 32 * 320; ++i) qweight.as<uint32_t>()[i] = static_cast<uint32_t>(rng());
  for (int64_t i = 0; i < 8 * 40; ++i) qzeros.as<uint32_t>()[i] = static_cast<uint32_t>(rng());
  for (int i = 0; i < 256; ++i) g_idx.as<int32_t>()[i] = (i * 5) % 8;
  return {
      {make_node(LayerType::kMATMUL_INT4, Int4MatmulParams{256, 320, 8, 1}, "int4"),
       {rnd(f, {300, 256}), qweight, qzeros, rnd(DataType::kHALF, {8, 320}), g_idx}},
      {make_node(LayerType::kMATMUL, MatMulParams{false, true}, "mm"),
       {rnd(f, {4, 96, 256}), rnd(DataType::kBF16, {320, 256})}},
      {make_node(LayerType::kMATMUL, MatMulParams{false, true}, "mm_panels"),
       {rnd(f, {3, 2048}), rnd(DataType::kBF16, {1000, 2048})}},
      {make_node(LayerType::kMATMUL, MatMulParams{true, false}, "bmm_panels"),
       {rnd(f, {2, 2048, 3}), rnd(DataType::kHALF, {2048, 1000})}},
      {make_node(LayerType::kMATMUL, MatMulParams{false, false}, "gemm_tiles"),
       {rnd(f, {300, 256}), rnd(f, {256, 700})}},
      {make_node(LayerType::kMATMUL, MatMulParams{true, false}, "bmm"),
       {rnd(f, {8, 64, 48}), rnd(f, {8, 64, 40})}},
      {make_node(LayerType::kELEMENTWISE, ElementwiseParams{ElementwiseOp::kPROD}, "mul"),
       {rnd(f, {64, 128, 32}), rnd(DataType::kHALF, {128, 1})}},
      {make_node(LayerType::kUNARY, UnaryParams{UnaryOp::kGELU_TANH}, "gelu"),
       {rnd(f, {512, 512})}},
      {make_node(LayerType::kSOFTMAX, SoftmaxParams{-1}, "softmax"), {rnd(f, {256, 1024})}},
      {make_node(LayerType::kSOFTMAX, SoftmaxParams{0}, "softmax0"), {rnd(f, {300, 700})}},
      {make_node(LayerType::kREDUCE, ReduceParams{ReduceOp::kAVG, {0, 2}, false}, "mean"),
       {rnd(f, {64, 300, 40})}},
      {make_node(LayerType::kRMSNORM, NormParams{}, "rms"),
       {rnd(f, {512, 1024}), rnd(DataType::kBF16, {1024})}},
      {make_node(LayerType::kLAYERNORM, NormParams{}, "ln"),
       {rnd(f, {512, 1024}), rnd(f, {1024}), rnd(f, {1024})}},
      {make_node(LayerType::kGATHER, GatherParams{0}, "emb"),
       {rnd(DataType::kBF16, {1000, 256}), tokens}},
      {make_node(LayerType::kTRANSPOSE, TransposeParams{{0, 2, 1, 3}}, "tr"),
       {rnd(f, {4, 128, 16, 64})}},
      {make_node(LayerType::kSLICE, SliceParams{{0, 1, 0}, {-1, 200, -1}, {1, 2, 1}}, "slice"),
       {rnd(f, {16, 512, 64})}},
      {make_node(LayerType::kCONCAT, ConcatParams{1}, "cat"),
       {rnd(f, {32, 300, 16}), rnd(f, {32, 200, 16})}},
      {make_node(LayerType::kCAST, CastParams{DataType::kHALF}, "cast"), {rnd(f, {300000})}},
      {make_node(LayerType::kCONVOLUTION, conv, "conv"),
       {rnd(f, {2, 16, 32, 32}), rnd(DataType::kHALF, {32, 16, 3, 3}), rnd(f, {32})}},
      {make_node(LayerType::kBATCHNORM, BatchNormParams{}, "bn"),
       {rnd(f, {4, 32, 40, 40}), rnd(f, {32}), rnd(f, {32}), rnd(f, {32}),
        random_buf(f, {32}, rng, 0.5, 2)}},
      {make_node(LayerType::kPOOLING, pool, "pool"), {rnd(f, {4, 32, 40, 40})}},
      {make_node(LayerType::kMOE, MoeParams{8, 2, 128, UnaryOp::kSILU, true}, "moe"),
       {rnd(f, {300, 256}), rnd(f, {300, 8}), rnd(DataType::kBF16, {8 * 2 * 128, 256}),
        rnd(DataType::kBF16, {8 * 256, 128})}},
  };
}

TEST(KernelBehaviour, RunsAreBitwiseDeterministicAndIndependentOfThreadCount) {
  const int threads = omp_get_max_threads();
  for (const NodeCase& c : large_nodes()) {
    SCOPED_TRACE(c.node.name);
    const Buf first = run(c.node, c.inputs);
    const Buf second = run(c.node, c.inputs);
    EXPECT_TRUE(bitwise_equal(first, second));
    omp_set_num_threads(1);
    const Buf single = run(c.node, c.inputs);
    omp_set_num_threads(threads);
    EXPECT_TRUE(bitwise_equal(first, single));
  }
}

void expect_error(const std::function<void()>& f, ErrorCode code,
                  std::initializer_list<std::string> parts) {
  try {
    f();
    ADD_FAILURE() << "expected " << error_code_name(code) << ", got no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    for (const auto& p : parts)
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos)
          << "message '" << e.what() << "' lacks '" << p << "'";
  }
}

TEST(KernelBehaviour, GatherRejectsOutOfRangeIndexNamingNodeIndexAndBound) {
  std::mt19937 rng(1);
  const Buf table = random_buf(DataType::kFLOAT, {5, 4}, rng);
  const GraphNode node = make_node(LayerType::kGATHER, GatherParams{0}, "embed_tokens");
  expect_error(
      [&] {
        run(node, {table, from_values(DataType::kINT32, {3}, {1, 7, 2})});
      },
      ErrorCode::kINVALID_ARGUMENT,
      {"node 'embed_tokens' (gather)", "index 7", "position 1", "[0, 5)"});
  expect_error(
      [&] {
        run(node, {table, from_values(DataType::kINT64, {2}, {0, -1})});
      },
      ErrorCode::kINVALID_ARGUMENT, {"index -1", "[0, 5)"});
}

// A vocab-parallel embedding's share: rows [10, 15) of a larger table.
TEST(KernelBehaviour, GatherOfATableBlockReadsItsRowsAndZerosOrRejectsTheRest) {
  std::mt19937 rng(2);
  const Buf table = random_buf(DataType::kBF16, {5, 4}, rng);
  const Buf ids = from_values(DataType::kINT32, {4}, {12, 3, 10, 15});
  const Buf out =
      run(make_node(LayerType::kGATHER, GatherParams{0, 10, true}, "embed"), {table, ids});
  const Buf rows = run(make_node(LayerType::kGATHER, GatherParams{0}, "rows"),
                       {table, from_values(DataType::kINT32, {2}, {2, 0})});
  for (int c = 0; c < 4; ++c) {
    EXPECT_EQ(out.as<float>()[0 * 4 + c], rows.as<float>()[0 * 4 + c]);  // 12 → row 2
    EXPECT_EQ(out.as<float>()[2 * 4 + c], rows.as<float>()[1 * 4 + c]);  // 10 → row 0
    EXPECT_EQ(out.as<float>()[1 * 4 + c], 0.f);                          // 3: another rank's
    EXPECT_EQ(out.as<float>()[3 * 4 + c], 0.f);                          // 15: past the block
  }
  expect_error(
      [&] {
        run(make_node(LayerType::kGATHER, GatherParams{0, 10, false}, "embed"), {table, ids});
      },
      ErrorCode::kINVALID_ARGUMENT, {"index 3", "position 1", "[10, 15)"});
}

TEST(KernelBehaviour, MatmulInt4RejectsGidxOutOfRangeNamingNodeAndRow) {
  std::mt19937 rng(4);
  Buf g_idx(DataType::kINT32, {16});
  for (int i = 0; i < 16; ++i) g_idx.as<int32_t>()[i] = i / 8;
  g_idx.as<int32_t>()[11] = 2;
  const GraphNode node =
      make_node(LayerType::kMATMUL_INT4, Int4MatmulParams{16, 8, 2, 1}, "q_proj");
  expect_error(
      [&] {
        run(node, {random_buf(DataType::kFLOAT, {3, 16}, rng), Buf(DataType::kINT32, {2, 8}),
                   Buf(DataType::kINT32, {2, 1}), random_buf(DataType::kHALF, {2, 8}, rng), g_idx});
      },
      ErrorCode::kINVALID_ARGUMENT,
      {"node 'q_proj' (matmul_int4)", "g_idx[11] = 2", "there are 2"});
}

TEST(KernelBehaviour, RunNodeRejectsOutputsThatDisagreeWithShapeInference) {
  std::mt19937 rng(2);
  const Buf a = random_buf(DataType::kFLOAT, {2, 3}, rng);
  const Buf b = random_buf(DataType::kFLOAT, {3, 4}, rng);
  const GraphNode node = make_node(LayerType::kMATMUL, MatMulParams{}, "proj");
  const std::vector<cpu::TensorRef> in = {a.ref(), b.ref()};
  Buf wrong_shape(DataType::kFLOAT, {2, 5});
  const cpu::TensorRef o1 = wrong_shape.ref();
  expect_error([&] { cpu::run_node(node, in, std::span(&o1, 1)); }, ErrorCode::kSHAPE_MISMATCH,
               {"node 'proj' (matmul)", "f32[2, 5]", "expected f32[2, 4]"});
  Buf wrong_dtype(DataType::kHALF, {2, 4});
  const cpu::TensorRef o2 = wrong_dtype.ref();
  expect_error([&] { cpu::run_node(node, in, std::span(&o2, 1)); }, ErrorCode::kDTYPE_MISMATCH,
               {"f16[2, 4]", "expected f32[2, 4]"});
  const Buf bad_b = random_buf(DataType::kFLOAT, {5, 4}, rng);
  Buf out(DataType::kFLOAT, {2, 4});
  const cpu::TensorRef o3 = out.ref();
  const std::vector<cpu::TensorRef> bad_in = {a.ref(), bad_b.ref()};
  expect_error([&] { cpu::run_node(node, bad_in, std::span(&o3, 1)); }, ErrorCode::kSHAPE_MISMATCH,
               {"proj", "inner dims differ"});
}

TEST(KernelBehaviour, RunNodeRejectsDtypesNoKernelHandles) {
  const Buf a(DataType::kINT32, {2, 3});
  const Buf b(DataType::kINT32, {3, 4});
  Buf out(DataType::kFLOAT, {2, 4});
  const cpu::TensorRef o = out.ref();
  const std::vector<cpu::TensorRef> in = {a.ref(), b.ref()};
  expect_error(
      [&] {
        cpu::run_node(make_node(LayerType::kMATMUL, MatMulParams{}, "mm"), in, std::span(&o, 1));
      },
      ErrorCode::kUNSUPPORTED, {"node 'mm' (matmul)", "i32"});
  const Buf x(DataType::kFLOAT, {4});
  const Buf y(DataType::kINT8, {4});
  const std::vector<cpu::TensorRef> mixed = {x.ref(), y.ref()};
  Buf cat(DataType::kFLOAT, {8});
  const cpu::TensorRef oc = cat.ref();
  expect_error(
      [&] {
        cpu::run_node(make_node(LayerType::kCONCAT, ConcatParams{0}, "cat"), mixed,
                      std::span(&oc, 1));
      },
      ErrorCode::kUNSUPPORTED, {"node 'cat' (concat)", "i8", "input 0 is f32"});
}

TEST(KernelBehaviour, CastTruncatesSaturatesAndRoundsToNearestEven) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const Buf x = from_values(DataType::kFLOAT, {7}, {2.7, -2.7, 1e10, -1e10, nan, 0.0, -0.5});
  const auto i32 = run(make_node(LayerType::kCAST, CastParams{DataType::kINT32}), {x});
  const int32_t* v = i32.as<int32_t>();
  EXPECT_EQ(v[0], 2);
  EXPECT_EQ(v[1], -2);
  EXPECT_EQ(v[2], std::numeric_limits<int32_t>::max());
  EXPECT_EQ(v[3], std::numeric_limits<int32_t>::min());
  EXPECT_EQ(v[4], 0);
  EXPECT_EQ(v[6], 0);
  const auto b = run(make_node(LayerType::kCAST, CastParams{DataType::kBOOL}), {x});
  EXPECT_EQ(std::vector<uint8_t>(b.bytes.begin(), b.bytes.end()),
            (std::vector<uint8_t>{1, 1, 1, 1, 1, 0, 1}));
  // 1 + 2^-11 is halfway between two f16 values: ties go to the even one (1.0);
  // 1 + 3 * 2^-11 is halfway too and rounds up to 1 + 2^-9.
  const Buf ties = from_values(DataType::kFLOAT, {2},
                               {1.0 + std::ldexp(1.0, -11), 1.0 + 3 * std::ldexp(1.0, -11)});
  const auto h = run(make_node(LayerType::kCAST, CastParams{DataType::kHALF}), {ties});
  EXPECT_EQ(h.values(), (std::vector<double>{1.0, 1.0 + std::ldexp(1.0, -9)}));
  // int -> narrower int wraps.
  const Buf big = from_values(DataType::kINT32, {2}, {300, -129});
  const auto i8 = run(make_node(LayerType::kCAST, CastParams{DataType::kINT8}), {big});
  EXPECT_EQ(i8.as<int8_t>()[0], 44);
  EXPECT_EQ(i8.as<int8_t>()[1], 127);
}

TEST(KernelBehaviour, SoftmaxIsStableForLargeInputsAndNansPropagate) {
  const Buf x = from_values(DataType::kFLOAT, {2, 3}, {1000, 1001, 1002, -1e30, 0, 1e30});
  const auto y = run(make_node(LayerType::kSOFTMAX, SoftmaxParams{-1}), {x}).values();
  const double e1 = std::exp(-1.0), e2 = std::exp(-2.0);
  EXPECT_NEAR(y[2], 1 / (1 + e1 + e2), 1e-6);
  EXPECT_NEAR(y[0], e2 / (1 + e1 + e2), 1e-6);
  EXPECT_EQ(y[5], 1.0);
  EXPECT_EQ(y[3], 0.0);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const Buf n = from_values(DataType::kFLOAT, {3}, {1, nan, 2});
  EXPECT_TRUE(
      std::isnan(run(make_node(LayerType::kREDUCE, ReduceParams{ReduceOp::kMAX, {0}, false}), {n})
                     .values()[0]));
  EXPECT_TRUE(std::isnan(cpu::apply_unary(UnaryOp::kRELU, std::nanf(""))));
  EXPECT_TRUE(std::isnan(cpu::apply_binary(ElementwiseOp::kMAX, 1.0f, std::nanf(""))));
  EXPECT_TRUE(std::isnan(cpu::apply_binary(ElementwiseOp::kMIN, std::nanf(""), 1.0f)));
}

TEST(KernelBehaviour, ZeroSizedTensorsRunWithoutTouchingMemory) {
  const Buf a(DataType::kFLOAT, {0, 3});
  const Buf b(DataType::kFLOAT, {3, 4});
  EXPECT_EQ(run(make_node(LayerType::kMATMUL, MatMulParams{}), {a, b}).dims, (Dims{0, 4}));
  EXPECT_EQ(run(make_node(LayerType::kUNARY, UnaryParams{UnaryOp::kEXP}), {a}).dims, (Dims{0, 3}));
  EXPECT_EQ(run(make_node(LayerType::kTRANSPOSE, TransposeParams{{1, 0}}), {a}).dims, (Dims{3, 0}));
  const Buf idx(DataType::kINT32, {0});
  EXPECT_EQ(run(make_node(LayerType::kGATHER, GatherParams{0}), {b, idx}).dims, (Dims{0, 4}));
}

}  // namespace
}  // namespace bindery::test

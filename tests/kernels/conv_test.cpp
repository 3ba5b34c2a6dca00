// Convolution against a naive direct convolution over groups, stride, padding and dilation;
// the fused epilogue against the separate kernels (bit for bit); reduced-precision weights.

#include <gtest/gtest.h>

#include <cmath>

#include "kernel_test_util.h"

namespace bindery::test {
namespace {

/// Direct convolution in double: out[n,o,y,x] = bias[o] + sum_{c,i,j} x[..] * w[..].
std::vector<double> direct_conv(const Buf& x, const Buf& w, const Buf* bias, const ConvParams& p,
                                const Dims& out) {
  const auto xv = x.values(), wv = w.values();
  const auto bv = bias ? bias->values() : std::vector<double>{};
  const Dims& xd = x.dims;
  const Dims& wd = w.dims;
  const int64_t og = wd[0] / p.groups;
  std::vector<double> r;
  for (int64_t n = 0; n < out[0]; ++n)
    for (int64_t o = 0; o < out[1]; ++o)
      for (int64_t y = 0; y < out[2]; ++y)
        for (int64_t xo = 0; xo < out[3]; ++xo) {
          double s = bias ? bv[o] : 0.0;
          const int64_t g = o / og;
          for (int64_t c = 0; c < wd[1]; ++c)
            for (int64_t i = 0; i < wd[2]; ++i)
              for (int64_t j = 0; j < wd[3]; ++j) {
                const int64_t iy = y * p.stride[0] - p.padding[0] + i * p.dilation[0];
                const int64_t ix = xo * p.stride[1] - p.padding[1] + j * p.dilation[1];
                if (iy < 0 || iy >= xd[2] || ix < 0 || ix >= xd[3]) continue;
                s += xv[((n * xd[1] + g * wd[1] + c) * xd[2] + iy) * xd[3] + ix] *
                     wv[((o * wd[1] + c) * wd[2] + i) * wd[3] + j];
              }
          r.push_back(s);
        }
  return r;
}

TEST(Conv, MatchesDirectConvolutionOverGroupsStridePaddingDilation) {
  std::mt19937 rng(11);
  int checked = 0;
  for (int64_t groups : {1, 2, 3})
    for (int64_t k : {1, 2, 3})
      for (int64_t stride : {1, 2, 3})
        for (int64_t pad : {0, 1, 2})
          for (int64_t dil : {1, 2}) {
            ConvParams p;
            p.groups = groups;
            p.stride = {stride, stride == 3 ? 1 : stride};
            p.padding = {pad, k == 1 ? 0 : pad};
            p.dilation = {dil, 1};
            const int64_t cg = 2, og = 2;
            const Dims xd = {2, cg * groups, 8, 7};
            const Dims wd = {og * groups, cg, k, k + 1};
            const int64_t extent_h = dil * (k - 1) + 1, extent_w = k + 1;
            if (xd[2] + 2 * p.padding[0] < extent_h || xd[3] + 2 * p.padding[1] < extent_w)
              continue;
            const bool with_bias = (checked % 2) == 0;
            std::vector<Buf> in = {random_buf(DataType::kFLOAT, xd, rng),
                                   random_buf(DataType::kFLOAT, wd, rng)};
            in.push_back(with_bias ? random_buf(DataType::kFLOAT, {wd[0]}, rng) : Buf::none());
            const Buf out = run(make_node(LayerType::kCONVOLUTION, p, "conv"), in);
            const auto ref = direct_conv(in[0], in[1], with_bias ? &in[2] : nullptr, p, out.dims);
            const auto got = out.values();
            ASSERT_EQ(got.size(), ref.size());
            for (size_t i = 0; i < got.size(); ++i)
              ASSERT_NEAR(got[i], ref[i], 1e-5 * std::max(1.0, std::fabs(ref[i])))
                  << "groups=" << groups << " k=" << k << " stride=" << stride << " pad=" << pad
                  << " dil=" << dil << " element " << i;
            ++checked;
          }
  EXPECT_GT(checked, 100);
}

TEST(Conv, FusedEpilogueIsBitIdenticalToSeparateKernels) {
  std::mt19937 rng(5);
  const int64_t o = 6;
  const Buf x = random_buf(DataType::kFLOAT, {2, 4, 9, 9}, rng, -2, 2);
  const Buf w = random_buf(DataType::kFLOAT, {o, 4, 3, 3}, rng);
  const Buf b = random_buf(DataType::kFLOAT, {o}, rng);
  std::vector<float> per_channel(o), scale = {0.37f};
  for (int64_t i = 0; i < o; ++i) per_channel[i] = 0.1f * static_cast<float>(i) - 0.2f;

  ConvParams plain;
  plain.padding = {1, 1};
  ConvParams fused = plain;
  fused.epilogue = {
      {true, UnaryOp::kGELU_ERF, ElementwiseOp::kMAX, {}},
      {false, UnaryOp::kRELU, ElementwiseOp::kMAX, per_channel},
      {false, UnaryOp::kRELU, ElementwiseOp::kPROD, scale},
      {true, UnaryOp::kSILU, ElementwiseOp::kMAX, {}},
      {false, UnaryOp::kRELU, ElementwiseOp::kSUM, per_channel},
      {false, UnaryOp::kRELU, ElementwiseOp::kSUB, scale},
      {false, UnaryOp::kRELU, ElementwiseOp::kDIV, per_channel},
      {true, UnaryOp::kTANH, ElementwiseOp::kMAX, {}},
  };
  const Buf got = run(make_node(LayerType::kCONVOLUTION, fused, "fused"), {x, w, b});

  // The same steps as separate nodes: constants as [1, O, 1, 1] (per channel) or [] (scalar).
  Buf y = run(make_node(LayerType::kCONVOLUTION, plain, "conv"), {x, w, b});
  for (const EpilogueStep& s : fused.epilogue) {
    if (s.is_unary) {
      y = run(make_node(LayerType::kUNARY, UnaryParams{s.unary}, "act"), {y});
      continue;
    }
    std::vector<double> c(s.constant.begin(), s.constant.end());
    const Buf cb = from_values(DataType::kFLOAT, c.size() == 1 ? Dims{} : Dims{1, o, 1, 1}, c);
    y = run(make_node(LayerType::kELEMENTWISE, ElementwiseParams{s.binary}, "ew"), {y, cb});
  }
  ASSERT_EQ(got.dims, y.dims);
  EXPECT_TRUE(bitwise_equal(got, y));
  // The scalar entry points agree with the kernels too.
  EXPECT_EQ(cpu::apply_unary(UnaryOp::kGELU_ERF, 0.3f),
            run(make_node(LayerType::kUNARY, UnaryParams{UnaryOp::kGELU_ERF}),
                {from_values(DataType::kFLOAT, {1}, {0.3})})
                .as<float>()[0]);
}

/// A reduced-precision weight gives exactly the result of its f32 widening: kernels widen
/// first and then run the f32 path. (A matmul whose weight spans several widening panels is
/// only close: the panels cut its gemm differently; see ReducedPrecisionMatmulPanels.)
TEST(Conv, F16AndBf16WeightsMatchTheirF32WideningBitForBit) {
  std::mt19937 rng(9);
  for (DataType wt : {DataType::kHALF, DataType::kBF16}) {
    SCOPED_TRACE(std::string(dtype_name(wt)));
    const Buf x = random_buf(DataType::kFLOAT, {1, 4, 6, 6}, rng);
    const Buf w = random_buf(wt, {4, 2, 3, 3}, rng);
    const Buf b = random_buf(wt, {4}, rng);
    const Buf w32 = from_values(DataType::kFLOAT, w.dims, w.values());
    const Buf b32 = from_values(DataType::kFLOAT, b.dims, b.values());
    ConvParams p;
    p.groups = 2;
    p.epilogue = {{true, UnaryOp::kRELU, ElementwiseOp::kMAX, {}}};
    const Buf lo = run(make_node(LayerType::kCONVOLUTION, p), {x, w, b});
    const Buf hi = run(make_node(LayerType::kCONVOLUTION, p), {x, w32, b32});
    EXPECT_EQ(lo.dtype, DataType::kFLOAT);
    EXPECT_TRUE(bitwise_equal(lo, hi));

    const Buf a = random_buf(DataType::kFLOAT, {3, 5, 8}, rng);
    const Buf m = random_buf(wt, {16, 8}, rng);
    const Buf m32 = from_values(DataType::kFLOAT, m.dims, m.values());
    EXPECT_TRUE(
        bitwise_equal(run(make_node(LayerType::kMATMUL, MatMulParams{false, true}), {a, m}),
                      run(make_node(LayerType::kMATMUL, MatMulParams{false, true}), {a, m32})));

    const Buf g = random_buf(wt, {8}, rng);
    const Buf g32 = from_values(DataType::kFLOAT, g.dims, g.values());
    EXPECT_TRUE(bitwise_equal(run(make_node(LayerType::kRMSNORM, NormParams{}), {a, g}),
                              run(make_node(LayerType::kRMSNORM, NormParams{}), {a, g32})));
  }
}

/// A shared f16/bf16 matmul weight is widened in column panels: results over several panels
/// (and a partial last one), for both layouts of b, match the f32 widening.
TEST(Conv, ReducedPrecisionMatmulPanelsMatchF32Widening) {
  std::mt19937 rng(21);
  for (DataType wt : {DataType::kHALF, DataType::kBF16})
    for (bool tb : {true, false}) {
      SCOPED_TRACE(std::string(dtype_name(wt)) + (tb ? " b^T" : " b"));
      const int64_t k = 2048, n = 1100;  // 512-column panels: 3 panels, the last partial
      const Buf w = random_buf(wt, tb ? Dims{n, k} : Dims{k, n}, rng);
      const Buf w32 = from_values(DataType::kFLOAT, w.dims, w.values());
      for (bool ta : {false, true}) {
        const Buf a = random_buf(DataType::kFLOAT, ta ? Dims{2, k, 3} : Dims{2, 3, k}, rng);
        const GraphNode node = make_node(LayerType::kMATMUL, MatMulParams{ta, tb});
        const auto lo = run(node, {a, w}).values();
        const auto hi = run(node, {a, w32}).values();
        ASSERT_EQ(lo.size(), static_cast<size_t>(2 * 3 * n));
        for (size_t i = 0; i < lo.size(); ++i)
          ASSERT_NEAR(lo[i], hi[i], 1e-5 * std::max(1.0, std::fabs(hi[i]))) << "element " << i;
      }
    }
}

}  // namespace
}  // namespace bindery::test

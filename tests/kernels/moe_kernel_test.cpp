// The sparse mixture-of-experts kernel (kMOE) against a direct reference in double: every
// token's top-k experts, each expert's gated MLP from its rows of the stacked weights, in any
// weight dtype; and a decoded token's output does not depend on the tokens routed beside it.
// (Routing ties against transformers: tests/models/mixtral_test.cpp.)

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "kernel_test_util.h"

namespace bindery::test {
namespace {

double silu(double v) { return v / (1.0 + std::exp(-v)); }
double gelu_tanh(double v) {
  return 0.5 * v * (1.0 + std::tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)));
}

// y[t] = sum over its top-k experts of weight * down(act(gate x) * up x), all in double, with
// the experts ranked by logit (random logits: no ties).
std::vector<double> reference(const MoeParams& p, const Buf& x, const Buf& logits,
                              const Buf& gate_up, const Buf& down) {
  const int64_t tokens = x.dims[0], h = x.dims[1], f = p.ffn_size, e = p.num_experts;
  const auto xv = x.values(), lv = logits.values(), gu = gate_up.values(), dv = down.values();
  std::vector<double> y(static_cast<size_t>(tokens * h), 0.0);
  for (int64_t t = 0; t < tokens; ++t) {
    const double* l = &lv[t * e];
    const double m = *std::max_element(l, l + e);
    std::vector<double> prob(static_cast<size_t>(e));
    for (int64_t j = 0; j < e; ++j) prob[j] = std::exp(l[j] - m);
    const double sum = std::accumulate(prob.begin(), prob.end(), 0.0);
    for (double& v : prob) v /= sum;
    std::vector<int64_t> order(static_cast<size_t>(e));
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return prob[a] > prob[b]; });
    double chosen = 0;
    for (int64_t i = 0; i < p.top_k; ++i) chosen += prob[order[i]];
    for (int64_t i = 0; i < p.top_k; ++i) {
      const int64_t ex = order[i];
      const double w = p.normalize_top_k ? prob[ex] / chosen : prob[ex];
      std::vector<double> hidden(static_cast<size_t>(f));
      for (int64_t j = 0; j < f; ++j) {
        double g = 0, u = 0;
        for (int64_t c = 0; c < h; ++c) {
          g += xv[t * h + c] * gu[(ex * 2 * f + j) * h + c];
          u += xv[t * h + c] * gu[(ex * 2 * f + f + j) * h + c];
        }
        hidden[j] = (p.activation == UnaryOp::kSILU ? silu(g) : gelu_tanh(g)) * u;
      }
      for (int64_t c = 0; c < h; ++c) {
        double o = 0;
        for (int64_t j = 0; j < f; ++j) o += hidden[j] * dv[(ex * h + c) * f + j];
        y[t * h + c] += w * o;
      }
    }
  }
  return y;
}

TEST(MoeKernel, MatchesReferenceInEveryWeightDtype) {
  std::mt19937 rng(5);
  const int64_t tokens = 13, h = 24, f = 12, e = 5;
  const Buf x = random_buf(DataType::kFLOAT, {tokens, h}, rng);
  const Buf logits = random_buf(DataType::kFLOAT, {tokens, e}, rng, -3, 3);
  for (const DataType wt : {DataType::kFLOAT, DataType::kHALF, DataType::kBF16}) {
    const Buf gate_up = random_buf(wt, {e * 2 * f, h}, rng);
    const Buf down = random_buf(wt, {e * h, f}, rng);
    for (const MoeParams& p :
         {MoeParams{e, 2, f, UnaryOp::kSILU, true}, MoeParams{e, 3, f, UnaryOp::kGELU_TANH, false},
          MoeParams{e, 1, f, UnaryOp::kSILU, true}, MoeParams{e, e, f, UnaryOp::kSILU, true}}) {
      SCOPED_TRACE(std::string(dtype_name(wt)) + " top_k " + std::to_string(p.top_k));
      const Buf y = run(make_node(LayerType::kMOE, p), {x, logits, gate_up, down});
      ASSERT_EQ(y.dims, (Dims{tokens, h}));
      EXPECT_EQ(y.dtype, DataType::kFLOAT);
      const auto want = reference(p, x, logits, gate_up, down);
      const auto got = y.values();
      for (size_t i = 0; i < want.size(); ++i) ASSERT_NEAR(got[i], want[i], 1e-5) << i;
    }
  }
}

// A token's output is the same bits whether it runs alone or among others, as for a dense
// layer: with experts large enough for the matmul kernel's matrix-vector path (n * k >= 2^16)
// and at most 8 tokens per expert, batched decoding equals one-by-one decoding.
TEST(MoeKernel, DecodedTokensDoNotDependOnTheOtherTokens) {
  std::mt19937 rng(6);
  const int64_t tokens = 6, h = 256, f = 256, e = 4;
  const MoeParams p{e, 2, f, UnaryOp::kSILU, true};
  const Buf x = random_buf(DataType::kFLOAT, {tokens, h}, rng);
  const Buf logits = random_buf(DataType::kFLOAT, {tokens, e}, rng, -3, 3);
  for (const DataType wt : {DataType::kFLOAT, DataType::kBF16}) {
    SCOPED_TRACE(dtype_name(wt));
    const Buf gate_up = random_buf(wt, {e * 2 * f, h}, rng);
    const Buf down = random_buf(wt, {e * h, f}, rng);
    const GraphNode node = make_node(LayerType::kMOE, p);
    const Buf all = run(node, {x, logits, gate_up, down});
    for (int64_t t = 0; t < tokens; ++t) {
      Buf xt(DataType::kFLOAT, {1, h}), lt(DataType::kFLOAT, {1, e});
      std::memcpy(xt.bytes.data(), x.as<float>() + t * h, h * sizeof(float));
      std::memcpy(lt.bytes.data(), logits.as<float>() + t * e, e * sizeof(float));
      const Buf one = run(node, {xt, lt, gate_up, down});
      EXPECT_EQ(std::memcmp(one.bytes.data(), all.as<float>() + t * h, h * sizeof(float)), 0)
          << "token " << t;
    }
  }
}

TEST(MoeKernel, ZeroTokensWriteNothing) {
  std::mt19937 rng(7);
  const Buf y =
      run(make_node(LayerType::kMOE, MoeParams{2, 1, 4, UnaryOp::kSILU, true}),
          {Buf(DataType::kFLOAT, {0, 8}), Buf(DataType::kFLOAT, {0, 2}),
           random_buf(DataType::kFLOAT, {16, 8}, rng), random_buf(DataType::kFLOAT, {16, 4}, rng)});
  EXPECT_EQ(y.dims, (Dims{0, 8}));
}

}  // namespace
}  // namespace bindery::test

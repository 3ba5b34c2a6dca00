// ExecutionContext::set_token_selection on a CPU engine: the ids equal the host selection of
// the logits output row by row, with each row's Philox draw; bad settings and names are named
// errors.

#include "bindery/token_selection.h"

#include <gtest/gtest.h>

#include <set>

#include "common/engine_util.h"

namespace bindery {
namespace {

using testing::expect_error;

constexpr int64_t kROWS = 6, kVOCAB = 50;

// logits = relu(x): an engine whose output is exactly what the test feeds it.
std::unique_ptr<Engine> relu_engine() {
  Network net;
  Tensor* x = net.add_input("x", DataType::kFLOAT, {kROWS, kVOCAB});
  Tensor* y = net.add_unary(x, UnaryOp::kRELU)->output(0);
  y->set_name("logits");
  net.mark_output(y);
  return testing::build_engine(net, BuilderConfig{});
}

HostTensor random_logits(uint32_t seed) {
  HostTensor x(DataType::kFLOAT, {kROWS, kVOCAB});
  uint32_t state = seed;
  for (int64_t i = 0; i < x.count(); ++i) {
    state = state * 1664525u + 1013904223u;
    x.data_as<float>()[i] = static_cast<float>(state >> 8) / 16777216.0f * 6.0f;
  }
  return x;
}

TEST(TokenSelection, ContextSelectsWhatTheHostSelectsPerRow) {
  auto engine = relu_engine();
  auto ctx = engine->create_execution_context();
  const HostTensor x = random_logits(3);
  ctx->set_input("x", x.view());
  for (const TokenSelection& s :
       {TokenSelection{},
        TokenSelection{.temperature = 1.0f, .top_k = 5, .top_p = 0.9f, .step = 4, .seeds = {7}},
        TokenSelection{.temperature = 0.7f, .step = 2, .seeds = {1, 2, 3, 4, 5, 6}}}) {
    ctx->set_token_selection("logits", s);
    ctx->execute();
    const auto ids = ctx->selected_tokens("logits");
    ASSERT_EQ(ids.size(), static_cast<size_t>(kROWS));
    for (int64_t r = 0; r < kROWS; ++r) {
      const std::span<const float> row(x.data_as<float>() + r * kVOCAB, kVOCAB);
      EXPECT_EQ(ids[r], select_token(row, s, selection_uniform(s, r))) << "row " << r;
      if (s.greedy()) {
        EXPECT_EQ(ids[r], std::max_element(row.begin(), row.end()) - row.begin());
      }
    }
  }
  // Rows keyed alike draw alike; a different step draws anew.
  std::set<int32_t> seen;
  for (uint64_t step = 0; step < 20; ++step) {
    ctx->set_token_selection("logits",
                             TokenSelection{.temperature = 5.0f, .step = step, .seeds = {9}});
    ctx->execute();
    seen.insert(ctx->selected_tokens("logits")[0]);
  }
  EXPECT_GT(seen.size(), 3u);
}

TEST(TokenSelection, BadSettingsAndNamesAreNamedErrors) {
  auto engine = relu_engine();
  auto ctx = engine->create_execution_context();
  const HostTensor x = random_logits(5);
  ctx->set_input("x", x.view());
  expect_error(ErrorCode::kNOT_FOUND, [&] { ctx->set_token_selection("nope", TokenSelection{}); });
  expect_error(ErrorCode::kINVALID_ARGUMENT,
               [&] { ctx->set_token_selection("logits", TokenSelection{.top_p = 0.f}); });
  expect_error(ErrorCode::kINVALID_ARGUMENT,
               [&] { ctx->set_token_selection("logits", TokenSelection{.temperature = -1.f}); });
  expect_error(ErrorCode::kINVALID_ARGUMENT, [&] { ctx->selected_tokens("logits"); });
  // Two seeds for six rows.
  ctx->set_token_selection("logits", TokenSelection{.temperature = 1.f, .seeds = {1, 2}});
  expect_error(ErrorCode::kINVALID_ARGUMENT, [&] { ctx->execute(); });
  ctx->set_token_selection("logits", std::nullopt);
  ctx->execute();
  expect_error(ErrorCode::kINVALID_ARGUMENT, [&] { ctx->selected_tokens("logits"); });
  EXPECT_EQ(ctx->output("logits").shape, (Dims{kROWS, kVOCAB}));
}

}  // namespace
}  // namespace bindery

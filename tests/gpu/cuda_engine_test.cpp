// Llama engines on CUDA: the shipped bf16 model's logits against transformers run in bf16,
// greedy tokens, batches, refit, and what the CUDA backend refuses. Skips where no GPU is
// visible (CI, the build machine).

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <numeric>

#include "bindery/engine.h"
#include "bindery/error.h"
#include "bindery/models/generation.h"
#include "bindery/models/llama.h"
#include "common/gpu_util.h"
#include "core/device_memory.h"
#include "models/generation_util.h"
#include "models/golden_util.h"

namespace bindery::models {
namespace {

namespace fs = std::filesystem;
using testing::max_abs_diff;
const fs::path kSOURCE = BINDERY_SOURCE_DIR;

std::unique_ptr<Engine> cuda_engine(const char* model, LlamaBuildOptions options = {}) {
  if (!options.dtype) options.dtype = DataType::kBF16;
  return Engine::create(build_llama((kSOURCE / model).string(), options), Device::cuda(0));
}

float max_abs(const HostTensor& t) {
  float m = 0;
  for (int64_t i = 0; i < t.count(); ++i) m = std::max(m, std::abs(t.data_as<float>()[i]));
  return m;
}

// bf16 (or f16) activations, as transformers runs a bf16 model: the logits differ from the
// fp32 goldens by the rounding of different (fused, reordered) sums. Stated tolerance: no
// further from the fp32 logits than 1.5 x transformers' own bf16 run, plus 1% of the largest
// logit. Greedy tokens: the trained shipped models keep the fp32 goldens' first 8 new tokens;
// the tiny random fixtures (head_dim 64: Llama 3 rope and tied embeddings, Qwen2 biases,
// Mistral's window, Mixtral's 8 experts, GPTQ int4 with and without act-order, whose 40-token
// prompt runs the int4 prefill path) have near-ties a bf16 run may flip, so their first new
// token must match wherever the golden's winning margin exceeds twice the measured logit error.
struct GpuCase {
  const char* model;
  DataType dtype;
  bool trained;
};
class CudaGolden : public ::testing::TestWithParam<GpuCase> {};

TEST_P(CudaGolden, LogitsNearTransformersAndGreedyTokensEqual) {
  REQUIRE_GPU();
  const auto [model, dtype, trained] = GetParam();
  auto engine = cuda_engine(model, {.dtype = dtype});
  const auto g = testing::load_golden(kSOURCE / model);
  Generator gen(*engine);
  for (size_t i = 0; i < g.prompts.size(); ++i) {
    const HostTensor logits = gen.logits(g.prompts[i]);
    const float vs_bf16 = max_abs_diff(logits, g.logits_bf16[i]);
    const float vs_fp32 = max_abs_diff(logits, g.logits[i]);
    const float transformers_bf16 = max_abs_diff(g.logits_bf16[i], g.logits[i]);
    std::printf(
        "%s %s prompt %zu: max |gpu - transformers bf16| %.4g, |gpu - fp32| %.4g, "
        "|transformers bf16 - fp32| %.4g, max |logit| %.3g\n",
        model, dtype_name(dtype).data(), i, vs_bf16, vs_fp32, transformers_bf16,
        max_abs(g.logits[i]));
    EXPECT_LE(vs_fp32, 1.5f * transformers_bf16 + 0.01f * max_abs(g.logits[i]));
    const size_t n = g.prompts[i].size();
    const int64_t fresh = trained ? 8 : 1;
    const auto tokens = gen.generate({g.prompts[i]}, {.max_new_tokens = fresh})[0];
    const std::vector<int32_t> expected(g.greedy[i].begin(), g.greedy[i].begin() + n + fresh);
    if (trained) {
      EXPECT_EQ(tokens, expected);
      continue;
    }
    // The golden's margin between its best and second-best token after the prompt.
    const int64_t vocab = g.logits[i].shape()[1];
    std::vector<float> last(g.logits[i].data_as<float>() + (n - 1) * vocab,
                            g.logits[i].data_as<float>() + n * vocab);
    std::partial_sort(last.begin(), last.begin() + 2, last.end(), std::greater<float>());
    if (last[0] - last[1] > 2 * vs_fp32) EXPECT_EQ(tokens, expected);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Families, CudaGolden,
    ::testing::Values(GpuCase{"models/bible-llama", DataType::kBF16, true},
                      GpuCase{"models/bible-llama-fortunes", DataType::kBF16, true},
                      GpuCase{"models/bible-llama", DataType::kHALF, true},
                      GpuCase{"tests/fixtures/llama/gpu_llama3", DataType::kBF16, false},
                      GpuCase{"tests/fixtures/llama/gpu_qwen2", DataType::kBF16, false},
                      GpuCase{"tests/fixtures/llama/gpu_mistral", DataType::kBF16, false},
                      GpuCase{"tests/fixtures/llama/gpu_mistral", DataType::kHALF, false},
                      GpuCase{"tests/fixtures/llama/gpu_mixtral", DataType::kBF16, false},
                      GpuCase{"tests/fixtures/llama/gpu_mixtral", DataType::kHALF, false},
                      GpuCase{"tests/fixtures/llama/gpu_llama_gptq", DataType::kBF16, false},
                      GpuCase{"tests/fixtures/llama/gpu_llama_gptq_act", DataType::kBF16, false},
                      GpuCase{"tests/fixtures/llama/gpu_llama_gptq_act", DataType::kHALF, false}),
    [](const ::testing::TestParamInfo<GpuCase>& info) {
      std::string name = fs::path(info.param.model).filename().string() + "_" +
                         std::string(dtype_name(info.param.dtype));
      std::replace(name.begin(), name.end(), '-', '_');
      return name;
    });

// What `prompts` generate with every step launched node by node (BINDERY_CUDA_GRAPHS=0), then
// with decode steps replayed as captured graphs: {launched, captured}.
std::pair<std::vector<std::vector<int32_t>>, std::vector<std::vector<int32_t>>>
launched_and_captured(Engine& engine, const std::vector<std::vector<int32_t>>& prompts,
                      const SamplingConfig& sampling) {
  setenv("BINDERY_CUDA_GRAPHS", "0", 1);
  auto launched = Generator(engine).generate(prompts, sampling);
  unsetenv("BINDERY_CUDA_GRAPHS");
  return {std::move(launched), Generator(engine).generate(prompts, sampling)};
}

// Decode steps replayed as captured graphs (one per 256-position bucket: 300 steps cross one,
// and the second bucket is capped at the cache's 320 positions) compute what node-by-node
// launches do.
TEST(CudaEngine, CapturedDecodeStepsEqualLaunchedOnes) {
  REQUIRE_GPU();
  auto engine = cuda_engine("models/bible-llama", {.max_seq_len = 320});
  const SamplingConfig sampling{.max_new_tokens = 300, .temperature = 0.9f, .seed = 5};
  const auto [launched, captured] =
      launched_and_captured(*engine, {{1, 5, 9, 23}, {1, 77, 13, 8, 2}}, sampling);
  EXPECT_EQ(captured, launched);
  EXPECT_EQ(captured[0].size(), 304u);
}

// Mixtral's MoE layers: a 40-token prompt beside a short one (86 token-expert pairs: the
// prefill path that groups each expert's tokens for cuBLAS), then decode steps on the
// device-only path, which from the second step on replay as captured graphs (the MoE workspace
// is reserved before capture), give the tokens that node-by-node launches give.
TEST(CudaEngine, MixtralCapturedDecodeStepsEqualLaunchedOnes) {
  REQUIRE_GPU();
  auto engine = cuda_engine("tests/fixtures/llama/gpu_mixtral");
  std::vector<int32_t> long_prompt;
  for (int i = 0; i < 40; ++i) long_prompt.push_back((i * 37 + 1) % 256);
  SamplingConfig sampling;  // greedy
  sampling.max_new_tokens = 24;
  const auto [launched, captured] =
      launched_and_captured(*engine, {long_prompt, {1, 77, 13}}, sampling);
  EXPECT_EQ(captured, launched);
  EXPECT_EQ(captured[0].size(), 64u);
}

TEST(CudaEngine, BatchEqualsOneByOne) {
  REQUIRE_GPU();
  auto engine = cuda_engine("models/bible-llama");
  testing::expect_batch_equals_one_by_one(
      *engine, {{1, 5, 9, 23, 42, 7, 100, 3}, {1, 77, 13}, {1, 200, 150, 99, 31, 64}, {4}});
}

// The refit engine holds the fine-tune's bytes, so it computes exactly what a fresh build does.
TEST(CudaEngine, RefitGivesAFreshBuildsLogits) {
  REQUIRE_GPU();
  auto engine = cuda_engine("models/bible-llama", {.refit = true});
  Generator gen(*engine);
  const std::vector<int32_t> prompt = {1, 5, 9, 23, 42, 7};
  const HostTensor before = gen.logits(prompt);
  refit_from_hf_checkpoint(*engine, (kSOURCE / "models/bible-llama-fortunes").string());
  auto fresh = cuda_engine("models/bible-llama-fortunes");
  Generator fresh_gen(*fresh);
  const HostTensor after = gen.logits(prompt), expected = fresh_gen.logits(prompt);
  EXPECT_EQ(max_abs_diff(after, expected), 0.f);
  EXPECT_GT(max_abs_diff(before, after), 0.f);
}

// Tokens selected on the GPU are the host selection of the very logits the GPU computed:
// greedy exactly; sampled draws (same Philox u) except where fp32 probabilities straddle u.
TEST(CudaEngine, TokensSelectedOnTheGpuAreTheHostSelectionOfItsLogits) {
  REQUIRE_GPU();
  auto engine = cuda_engine("models/bible-llama");
  auto ctx = engine->create_execution_context();
  const std::vector<int32_t> ids = {1, 5, 9, 23, 42, 7, 100, 3}, seq(ids.size(), 0);
  std::vector<int32_t> pos(ids.size());
  std::iota(pos.begin(), pos.end(), 0);
  const auto n = static_cast<int64_t>(ids.size());
  ctx->set_input("input_ids", Weights(DataType::kINT32, {n}, ids.data()));
  ctx->set_input("positions", Weights(DataType::kINT32, {n}, pos.data()));
  ctx->set_input("seq_ids", Weights(DataType::kINT32, {n}, seq.data()));
  ctx->set_input("logit_rows", Weights(DataType::kINT32, {n}, pos.data()));
  ctx->execute();
  const HostTensor logits = HostTensor::copy_of(ctx->output("logits"));
  const int64_t vocab = logits.shape()[1];
  int draws = 0, equal = 0;
  for (uint64_t step = 0; step < 12; ++step) {
    TokenSelection s{.temperature = 0.9f, .top_k = 40, .top_p = 0.95f, .step = step, .seeds = {}};
    for (int64_t r = 0; r < n; ++r) s.seeds.push_back(100 + r);
    if (step == 0) s = TokenSelection{};
    ctx->reset_kv_cache();
    ctx->set_token_selection("logits", s);
    ctx->execute();
    const auto chosen = ctx->selected_tokens("logits");
    ASSERT_EQ(chosen.size(), static_cast<size_t>(n));
    for (int64_t r = 0; r < n; ++r) {
      const std::span<const float> row(logits.data_as<float>() + r * vocab,
                                       static_cast<size_t>(vocab));
      const int32_t host = select_token(row, s, selection_uniform(s, r));
      if (s.greedy()) EXPECT_EQ(chosen[r], host) << "row " << r;
      ++draws, equal += chosen[r] == host;
    }
  }
  std::printf("GPU selection equals the host's in %d of %d draws\n", equal, draws);
  EXPECT_GE(equal, draws - 3);
  try {
    ctx->output("logits");
    ADD_FAILURE() << "logits read back while the context selects tokens from them";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kINVALID_ARGUMENT) << e.what();
  }
  ctx->set_token_selection("logits", std::nullopt);
  ctx->execute();
  EXPECT_EQ(max_abs_diff(HostTensor::copy_of(ctx->output("logits")), logits), 0.f);
}

// GPTQ int4 layers (kMATMUL_INT4) on CUDA against the CPU engine (f32) on the same checkpoint:
// the 40-token prompt of the fixture's goldens (over 8 rows: W dequantized to bf16 for a cuBLAS
// GEMM), then 8 decode steps of one token each (the int4 GEMV, from the second step on replayed
// as a captured graph), fed the golden's greedy tokens. Stated tolerance for every row: no
// further from the CPU logits than 1.5 x transformers' own bf16 error on that prompt (the
// golden's |logits_bf16 - logits|, how far bf16 arithmetic moves this model) plus 1% of the
// largest logit, the bound CudaGolden uses.
TEST(CudaEngine, GptqInt4LogitsNearTheCpuEngineInPrefillAndDecode) {
  REQUIRE_GPU();
  for (const char* model :
       {"tests/fixtures/llama/gpu_llama_gptq", "tests/fixtures/llama/gpu_llama_gptq_act"}) {
    SCOPED_TRACE(model);
    const std::string dir = (kSOURCE / model).string();
    LlamaBuildOptions f32;
    f32.dtype = DataType::kFLOAT;
    auto cpu = Engine::create(build_llama(dir, f32));
    auto gpu = cuda_engine(model);
    int int4_layers = 0;
    for (const GraphNode& node : gpu->metadata().graph.nodes)
      int4_layers += node.type == LayerType::kMATMUL_INT4;
    EXPECT_EQ(int4_layers, 14);  // q/k/v/o/gate/up/down of 2 layers
    const auto g = testing::load_golden(kSOURCE / model);
    ASSERT_EQ(g.prompts.size(), 4u);
    const std::vector<int32_t>& prompt = g.prompts[3];
    ASSERT_EQ(prompt.size(), 40u);
    const float tol =
        1.5f * max_abs_diff(g.logits_bf16[3], g.logits[3]) + 0.01f * max_abs(g.logits[3]);
    auto cpu_ctx = cpu->create_execution_context();
    auto gpu_ctx = gpu->create_execution_context();
    // Runs `tokens` at positions first.. of sequence 0 and returns every row's logits.
    const auto step = [](ExecutionContext& ctx, std::vector<int32_t> tokens, int32_t first) {
      const int64_t n = static_cast<int64_t>(tokens.size());
      std::vector<int32_t> positions(tokens.size()), seq(tokens.size(), 0), rows(tokens.size());
      for (int64_t i = 0; i < n; ++i) positions[i] = first + static_cast<int32_t>(i), rows[i] = i;
      ctx.set_input("input_ids", Weights(DataType::kINT32, {n}, tokens.data()));
      ctx.set_input("positions", Weights(DataType::kINT32, {n}, positions.data()));
      ctx.set_input("seq_ids", Weights(DataType::kINT32, {n}, seq.data()));
      ctx.set_input("logit_rows", Weights(DataType::kINT32, {n}, rows.data()));
      ctx.execute();
      return HostTensor::copy_of(ctx.output("logits"));
    };
    const float prefill = max_abs_diff(step(*gpu_ctx, prompt, 0), step(*cpu_ctx, prompt, 0));
    std::printf("%s: 40-token prefill max |cuda - cpu| %.4g (tolerance %.4g)\n", model, prefill,
                tol);
    EXPECT_LE(prefill, tol);
    for (int32_t k = 0; k < 8; ++k) {
      const std::vector<int32_t> token = {g.greedy[3][40 + k]};
      const float decode =
          max_abs_diff(step(*gpu_ctx, token, 40 + k), step(*cpu_ctx, token, 40 + k));
      EXPECT_LE(decode, tol) << "decode step " << k;
    }
  }
}

TEST(CudaEngine, WhatTheBackendCannotRunIsANamedError) {
  REQUIRE_GPU();
  try {
    cuda_engine("models/bible-llama", {.dtype = DataType::kFLOAT})->create_execution_context();
    ADD_FAILURE() << "an f32 engine ran on CUDA";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kUNSUPPORTED);
    EXPECT_NE(std::string(e.what()).find("--dtype bfloat16"), std::string::npos) << e.what();
  }
  try {
    cuda_engine("tests/fixtures/llama/llama_gqa")->create_execution_context();
    ADD_FAILURE() << "head_dim 16 ran on CUDA";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kUNSUPPORTED);
    EXPECT_NE(std::string(e.what()).find("head_dim"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace bindery::models

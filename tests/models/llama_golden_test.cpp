// Llama-family engines against transformers' goldens (tools/make_llama_fixtures.py).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "bindery/engine.h"
#include "bindery/io/checkpoint_reader.h"
#include "bindery/models/generation.h"
#include "bindery/models/llama.h"
#include "models/golden_util.h"

namespace bindery::models {
namespace {

namespace fs = std::filesystem;
const fs::path kSOURCE = fs::path(BINDERY_SOURCE_DIR);

using testing::Golden;
using testing::max_abs_diff;

Golden golden(const std::string& model) { return testing::load_golden(kSOURCE / model); }

class LlamaGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(LlamaGolden, Fp32LogitsAndGreedyTokensMatchTransformers) {
  const Golden g = golden(GetParam());
  auto engine =
      Engine::create(build_llama((kSOURCE / GetParam()).string(), {.dtype = DataType::kFLOAT}));
  Generator gen(*engine);
  for (size_t i = 0; i < g.prompts.size(); ++i) {
    SCOPED_TRACE("prompt " + std::to_string(i));
    EXPECT_LE(max_abs_diff(gen.logits(g.prompts[i]), g.logits[i]), 1e-4f);
    const int64_t fresh = static_cast<int64_t>(g.greedy[i].size() - g.prompts[i].size());
    EXPECT_EQ(gen.generate({g.prompts[i]}, {.max_new_tokens = fresh})[0], g.greedy[i]);
  }
}

// Tiny random checkpoints of each architecture, and the real bf16 models shipped in models/
// (built in f32 here: bf16 weights widened exactly, compared with transformers in f32).
INSTANTIATE_TEST_SUITE_P(
    Models, LlamaGolden,
    ::testing::Values("tests/fixtures/llama/llama_gqa", "tests/fixtures/llama/llama_gqa_b",
                      "tests/fixtures/llama/llama3", "tests/fixtures/llama/qwen2",
                      "tests/fixtures/llama/mistral", "tests/fixtures/llama/mixtral",
                      "tests/fixtures/llama/gpu_llama3", "tests/fixtures/llama/gpu_qwen2",
                      "tests/fixtures/llama/gpu_mistral", "tests/fixtures/llama/gpu_mixtral",
                      "models/bible-llama", "models/bible-llama-fortunes"),
    [](const ::testing::TestParamInfo<std::string>& info) {
      std::string name = fs::path(info.param).filename().string();
      std::replace(name.begin(), name.end(), '-', '_');
      return name;
    });

// The shipped models are stored in bf16, so a bf16 engine holds exactly the weights transformers
// ran in f32: only the order of f32 sums differs. Stated tolerance 1e-3 (measured 1e-5).
TEST(LlamaGolden, ShippedModelInBf16MatchesFp32Goldens) {
  for (const char* model : {"models/bible-llama", "models/bible-llama-fortunes"}) {
    SCOPED_TRACE(model);
    auto engine =
        Engine::create(build_llama((kSOURCE / model).string(), {.dtype = DataType::kBF16}));
    EXPECT_EQ(engine->metadata().properties.at("model.dtype"), "bf16");
    const Golden g = golden(model);
    Generator gen(*engine);
    for (size_t i = 0; i < g.prompts.size(); ++i) {
      EXPECT_LE(max_abs_diff(gen.logits(g.prompts[i]), g.logits[i]), 1e-3f);
      const int64_t fresh = static_cast<int64_t>(g.greedy[i].size() - g.prompts[i].size());
      EXPECT_EQ(gen.generate({g.prompts[i]}, {.max_new_tokens = fresh})[0], g.greedy[i]);
    }
  }
}

// Refitting the shipped model with its fine-tuned sibling gives the sibling's goldens.
TEST(LlamaGolden, ShippedModelRefitToFineTuneGivesItsGoldens) {
  auto engine = Engine::create(build_llama((kSOURCE / "models/bible-llama").string(),
                                           {.dtype = DataType::kFLOAT, .refit = true}));
  refit_from_hf_checkpoint(*engine, (kSOURCE / "models/bible-llama-fortunes").string());
  const Golden g = golden("models/bible-llama-fortunes");
  Generator gen(*engine);
  for (size_t i = 0; i < g.prompts.size(); ++i) {
    EXPECT_LE(max_abs_diff(gen.logits(g.prompts[i]), g.logits[i]), 1e-4f);
    const int64_t fresh = static_cast<int64_t>(g.greedy[i].size() - g.prompts[i].size());
    EXPECT_EQ(gen.generate({g.prompts[i]}, {.max_new_tokens = fresh})[0], g.greedy[i]);
  }
}

}  // namespace
}  // namespace bindery::models

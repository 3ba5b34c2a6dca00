// Llama-family engines against transformers' goldens (tools/make_llama_fixtures.py).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "bindery/engine.h"
#include "bindery/io/checkpoint_reader.h"
#include "bindery/models/generation.h"
#include "bindery/models/llama.h"

namespace bindery::models {
namespace {

namespace fs = std::filesystem;
const fs::path kLLAMA = fs::path(BINDERY_SOURCE_DIR) / "tests/fixtures/llama";

struct Golden {
  std::vector<std::vector<int32_t>> prompts, greedy;
  std::vector<HostTensor> logits, logits_bf16;
};

Golden golden(const std::string& model) {
  const io::CheckpointReader g = io::CheckpointReader::open(kLLAMA / model / "golden.safetensors");
  Golden out;
  for (int i = 0; g.contains("prompt." + std::to_string(i)); ++i) {
    const std::string s = std::to_string(i);
    for (auto [name, list] : {std::pair{"prompt.", &out.prompts}, {"greedy.", &out.greedy}}) {
      const HostTensor t = g.read(name + s, DataType::kINT32);
      list->emplace_back(t.data_as<int32_t>(), t.data_as<int32_t>() + t.count());
    }
    out.logits.push_back(g.read("logits." + s));
    out.logits_bf16.push_back(g.read("logits_bf16." + s));
  }
  return out;
}

float max_abs_diff(const HostTensor& a, const HostTensor& b) {
  EXPECT_EQ(a.shape(), b.shape());
  float m = 0;
  for (int64_t i = 0; i < std::min(a.count(), b.count()); ++i)
    m = std::max(m, std::abs(a.data_as<float>()[i] - b.data_as<float>()[i]));
  return m;
}

class LlamaGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(LlamaGolden, Fp32LogitsAndGreedyTokensMatchTransformers) {
  const Golden g = golden(GetParam());
  auto engine =
      Engine::create(build_llama((kLLAMA / GetParam()).string(), {.dtype = DataType::kFLOAT}));
  Generator gen(*engine);
  for (size_t i = 0; i < g.prompts.size(); ++i) {
    SCOPED_TRACE("prompt " + std::to_string(i));
    EXPECT_LE(max_abs_diff(gen.logits(g.prompts[i]), g.logits[i]), 1e-4f);
    const int64_t fresh = static_cast<int64_t>(g.greedy[i].size() - g.prompts[i].size());
    EXPECT_EQ(gen.generate({g.prompts[i]}, {.max_new_tokens = fresh})[0], g.greedy[i]);
  }
}

INSTANTIATE_TEST_SUITE_P(Models, LlamaGolden,
                         ::testing::Values("llama_gqa", "llama_gqa_b", "llama3", "qwen2",
                                           "mistral"));

}  // namespace
}  // namespace bindery::models

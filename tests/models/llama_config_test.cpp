// LlamaConfig: both transformers spellings, every rope type against transformers' own
// frequencies (tests/fixtures/llama/rope_cases.json), and named errors for bad configs.
#include "bindery/models/llama_config.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "bindery/error.h"
#include "models/llama/rope.h"
#include "runtime/cpu/kernels.h"

namespace bindery::models {
namespace {

namespace fs = std::filesystem;
const fs::path kLLAMA = fs::path(BINDERY_SOURCE_DIR) / "tests/fixtures/llama";

nlohmann::json minimal() {
  return {{"model_type", "llama"},    {"vocab_size", 32},       {"hidden_size", 16},
          {"intermediate_size", 32},  {"num_hidden_layers", 1}, {"num_attention_heads", 4},
          {"num_key_value_heads", 2}, {"rope_theta", 10000.0}};
}

ErrorCode error_of(const nlohmann::json& j, std::string* message = nullptr) {
  try {
    LlamaConfig::from_json(j.dump(), "config.json");
  } catch (const Error& e) {
    if (message) *message = e.what();
    return e.code();
  }
  ADD_FAILURE() << "no error for " << j.dump();
  return ErrorCode::kINTERNAL;
}

TEST(LlamaConfig, RopeFrequenciesMatchTransformersForEveryType) {
  std::ifstream in(kLLAMA / "rope_cases.json");
  int cases = 0;
  for (const auto& c : nlohmann::json::parse(in)) {
    SCOPED_TRACE(c.at("name").get<std::string>());
    const LlamaConfig config = LlamaConfig::from_json(c.at("config").dump(), "case");
    const RotaryParams p = rotary_params(config, config.num_attention_heads);
    const auto want = c.at("inv_freq").get<std::vector<double>>();
    ASSERT_EQ(p.inv_freq.size(), want.size());
    for (size_t i = 0; i < want.size(); ++i)
      EXPECT_NEAR(p.inv_freq[i], want[i], 1e-6 * want[i]) << i;
    EXPECT_NEAR(p.attention_factor, c.at("attention_factor").get<double>(), 1e-6);
    ++cases;
  }
  EXPECT_EQ(cases, 6);
}

// The rotary kernel with dynamic scaling: a run reaching position 299 of a model trained on 256
// rotates with the frequencies transformers computes for seq_len 300.
TEST(LlamaConfig, DynamicRopeRotatesWithTransformersLongFrequencies) {
  std::ifstream in(kLLAMA / "rope_cases.json");
  for (const auto& c : nlohmann::json::parse(in)) {
    if (!c.contains("dynamic_inv_freq")) continue;
    const LlamaConfig config = LlamaConfig::from_json(c.at("config").dump(), "case");
    GraphNode node;
    node.name = "rope";
    node.type = LayerType::kROTARY;
    node.params = rotary_params(config, 1);
    const auto& p = std::get<RotaryParams>(node.params);
    const int64_t tokens = c.at("dynamic_seq_len"), d = p.head_dim, half = d / 2;
    std::vector<float> x(static_cast<size_t>(tokens * d), 0.0f), y(x.size());
    std::vector<int32_t> positions(static_cast<size_t>(tokens));
    for (int64_t t = 0; t < tokens; ++t) {
      positions[t] = static_cast<int32_t>(t);
      for (int64_t i = 0; i < half; ++i) x[t * d + i] = 1.0f;  // rotates to (cos, sin)
    }
    const cpu::TensorRef xin{DataType::kFLOAT, {tokens, d}, x.data()};
    const cpu::TensorRef pos{DataType::kINT32, {tokens}, positions.data()};
    const cpu::TensorRef out{DataType::kFLOAT, {tokens, d}, y.data()};
    const std::vector<cpu::TensorRef> inputs = {xin, pos, cpu::TensorRef{}};
    cpu::run_node(node, inputs, std::span(&out, 1));
    const auto freq = c.at("dynamic_inv_freq").get<std::vector<double>>();
    for (int64_t t : {int64_t{1}, int64_t{100}, tokens - 1})
      for (int64_t i = 0; i < half; ++i) {
        const double angle = static_cast<double>(t) * freq[i];
        EXPECT_NEAR(y[t * d + i], std::cos(angle), 2e-4) << t << " " << i;
        EXPECT_NEAR(y[t * d + half + i], std::sin(angle), 2e-4) << t << " " << i;
      }
    return;
  }
  FAIL() << "no dynamic case in rope_cases.json";
}

TEST(LlamaConfig, Reads5xSpellingFromFixtures) {
  const LlamaConfig llama3 = LlamaConfig::load((kLLAMA / "llama3").string());
  EXPECT_EQ(llama3.rope.type, RopeType::kLLAMA3);
  EXPECT_EQ(llama3.rope.factor, 8.0);
  EXPECT_EQ(llama3.rope.original_max_position_embeddings, 16);
  EXPECT_EQ(llama3.rope.theta, 500000.0);
  EXPECT_TRUE(llama3.tie_word_embeddings);
  const LlamaConfig qwen2 = LlamaConfig::load((kLLAMA / "qwen2").string());
  EXPECT_TRUE(qwen2.qkv_bias());
  EXPECT_FALSE(qwen2.o_bias());
  EXPECT_FALSE(qwen2.sliding_window.has_value());  // use_sliding_window is false
  const LlamaConfig mistral = LlamaConfig::load((kLLAMA / "mistral").string());
  EXPECT_EQ(mistral.sliding_window, 4);
  EXPECT_EQ(mistral.head_dim, 16);
}

TEST(LlamaConfig, Reads4xSpellingAndDefaults) {
  nlohmann::json j = minimal();
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  j["torch_dtype"] = "bfloat16";
  j["eos_token_id"] = {2, 7};
  const LlamaConfig c = LlamaConfig::from_json(j.dump(), "config.json");
  EXPECT_EQ(c.rope.type, RopeType::kLINEAR);
  EXPECT_EQ(c.rope.factor, 2.0);
  EXPECT_EQ(c.dtype, DataType::kBF16);
  EXPECT_EQ(c.head_dim, 4);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{2, 7}));
  EXPECT_FALSE(c.tie_word_embeddings);
  // The config survives the trip through a plan (5.x spelling).
  const LlamaConfig again = LlamaConfig::from_json(c.to_json(), "plan");
  EXPECT_EQ(again.rope.type, RopeType::kLINEAR);
  EXPECT_EQ(again.dtype, DataType::kBF16);
  EXPECT_EQ(again.num_key_value_heads, 2);
}

TEST(LlamaConfig, RejectsUnknownArchitecture) {
  nlohmann::json j = minimal();
  j["model_type"] = "gpt2";
  std::string message;
  EXPECT_EQ(error_of(j, &message), ErrorCode::kUNSUPPORTED);
  EXPECT_NE(message.find("gpt2"), std::string::npos) << message;
}

TEST(LlamaConfig, MissingRequiredFieldIsNamed) {
  nlohmann::json j = minimal();
  j.erase("hidden_size");
  std::string message;
  EXPECT_EQ(error_of(j, &message), ErrorCode::kNOT_FOUND);
  EXPECT_NE(message.find("'hidden_size'"), std::string::npos) << message;
}

TEST(LlamaConfig, RejectsUnknownRopeTypeAndBadHeads) {
  nlohmann::json j = minimal();
  j["rope_scaling"] = {{"rope_type", "su"}, {"factor", 2.0}};
  EXPECT_EQ(error_of(j), ErrorCode::kUNSUPPORTED);
  j = minimal();
  j["num_key_value_heads"] = 3;
  EXPECT_EQ(error_of(j), ErrorCode::kINVALID_ARGUMENT);
  j = minimal();
  j["hidden_size"] = "sixteen";
  EXPECT_EQ(error_of(j), ErrorCode::kINVALID_ARGUMENT);
}

TEST(LlamaConfig, RejectsInvalidJson) {
  try {
    LlamaConfig::from_json("{\"model_type\": ", "config.json");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kCORRUPT_FILE);
  }
}

}  // namespace
}  // namespace bindery::models

// Generation, refit and loading of Llama-family engines (library level; the CLI has its own).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <numeric>

#include "bindery/engine.h"
#include "bindery/error.h"
#include "bindery/io/checkpoint_reader.h"
#include "bindery/io/safetensors.h"
#include "bindery/models/generation.h"
#include "bindery/models/llama.h"
#include "common/error_util.h"
#include "models/generation_util.h"

namespace bindery::models {
namespace {

namespace fs = std::filesystem;
const fs::path kLLAMA = fs::path(BINDERY_SOURCE_DIR) / "tests/fixtures/llama";
const std::vector<std::vector<int32_t>> kPROMPTS = {
    {1, 5, 9, 23, 42, 7, 100, 3}, {1, 77, 13}, {1, 200, 150, 99, 31, 64}, {4}};

std::unique_ptr<Engine> engine_of(const char* model, LlamaBuildOptions options = {}) {
  return Engine::create(build_llama((kLLAMA / model).string(), options));
}

using bindery::testing::error_of;

TEST(LlamaGeneration, BatchEqualsOneByOneGreedyAndSampled) {
  // sliding window: the cache path that differs most
  auto engine = engine_of("mistral");
  testing::expect_batch_equals_one_by_one(*engine, kPROMPTS);
}

TEST(LlamaGeneration, SameSeedSameSamplesAndStopTokensEndASequence) {
  auto engine = engine_of("llama_gqa");
  Generator gen(*engine);
  const SamplingConfig s{.max_new_tokens = 8, .temperature = 1.5f, .seed = 7};
  EXPECT_EQ(gen.generate(kPROMPTS, s), gen.generate(kPROMPTS, s));
  const auto greedy = gen.generate({kPROMPTS[0]}, {.max_new_tokens = 8})[0];
  const int32_t third = greedy[kPROMPTS[0].size() + 2];
  const auto stopped =
      gen.generate({kPROMPTS[0]}, {.max_new_tokens = 8, .stop_tokens = {third}})[0];
  const auto first = std::find(greedy.begin() + kPROMPTS[0].size(), greedy.end(), third);
  EXPECT_EQ(stopped, std::vector<int32_t>(greedy.begin(), first + 1));
}

TEST(LlamaGeneration, SamplerHonoursTopKAndTopP) {
  const std::vector<float> logits = {0.1f, 3.0f, 2.9f, -1.0f};
  const auto uniform = [] { return 0.999; };  // the least likely token a filter leaves
  EXPECT_EQ(sample_token(logits, {}, uniform), 1);
  EXPECT_EQ(sample_token(logits, {.temperature = 1.0f, .top_k = 1}, uniform), 1);
  EXPECT_EQ(sample_token(logits, {.temperature = 1.0f, .top_k = 2}, uniform), 2);
  EXPECT_EQ(sample_token(logits, {.temperature = 1.0f, .top_p = 0.3f}, uniform), 1);
  EXPECT_EQ(sample_token(logits, {.temperature = 1.0f}, uniform), 3);
}

TEST(LlamaBuild, QkvAndGateUpAreFusedIntoConcatSlots) {
  const Plan plan = build_llama((kLLAMA / "qwen2").string(), {.refit = true});
  const std::string attn = "model.layers.1.self_attn.", mlp = "model.layers.1.mlp.";
  const std::vector<std::string> qkv = {attn + "q_proj.weight", attn + "k_proj.weight",
                                        attn + "v_proj.weight"};
  const std::vector<std::string> gate_up = {mlp + "gate_proj.weight", mlp + "up_proj.weight"};
  int found = 0;  // (q/k/v biases stay separate adds after the fused matmul)
  for (const Slot& s : plan.metadata().slots)
    found += (s.recipe.sources == qkv || s.recipe.sources == gate_up) &&
             s.recipe.to_string().starts_with("concat(axis=0");
  EXPECT_EQ(found, 2);
}

TEST(LlamaRefit, RefitFromBEqualsAFreshBuildOfBBitExact) {
  auto a = engine_of("llama_gqa", {.refit = true});
  const RefitSummary summary = refit_from_hf_checkpoint(*a, (kLLAMA / "llama_gqa_b").string());
  EXPECT_GT(summary.weights_set, 0);
  EXPECT_EQ(summary.slots_changed, summary.slots_total);
  auto b = engine_of("llama_gqa_b");
  Generator ga(*a), gb(*b);
  for (const auto& p : kPROMPTS) {
    const HostTensor la = ga.logits(p), lb = gb.logits(p);
    ASSERT_EQ(la.size_bytes(), lb.size_bytes());
    EXPECT_EQ(std::memcmp(la.data(), lb.data(), la.size_bytes()), 0);
  }
}

TEST(LlamaRefit, StrippedPlanRunsAfterRefitAtLoad) {
  auto engine = engine_of("llama_gqa", {.strip = true});
  EXPECT_FALSE(engine->weights_complete());
  Generator gen(*engine);
  EXPECT_EQ(error_of([&] { gen.logits(kPROMPTS[1]); }), ErrorCode::kMISSING_WEIGHTS);
  refit_from_hf_checkpoint(*engine, (kLLAMA / "llama_gqa_b").string());
  auto b = engine_of("llama_gqa_b");
  Generator gb(*b);
  const HostTensor la = gen.logits(kPROMPTS[1]), lb = gb.logits(kPROMPTS[1]);
  EXPECT_EQ(std::memcmp(la.data(), lb.data(), la.size_bytes()), 0);
}

TEST(LlamaRefit, FrozenEngineRefusesAndWrongArchitectureIsNamed) {
  auto frozen = engine_of("llama_gqa");
  EXPECT_EQ(error_of([&] { refit_from_hf_checkpoint(*frozen, (kLLAMA / "llama_gqa_b").string()); }),
            ErrorCode::kNOT_REFITTABLE);
  auto engine = engine_of("llama_gqa", {.refit = true});
  std::string message;
  // llama3 ties its head to the embedding and scales its rope: named field by field.
  EXPECT_EQ(
      error_of([&] { refit_from_hf_checkpoint(*engine, (kLLAMA / "llama3").string()); }, &message),
      ErrorCode::kINVALID_ARGUMENT);
  EXPECT_NE(message.find("tie_word_embeddings, rope_type"), std::string::npos) << message;
  // qwen2 has every tensor llama_gqa needs, with the same shapes (plus biases): refused by
  // its config, before any weight is touched.
  const uint64_t version = engine->weights_version();
  EXPECT_EQ(
      error_of([&] { refit_from_hf_checkpoint(*engine, (kLLAMA / "qwen2").string()); }, &message),
      ErrorCode::kINVALID_ARGUMENT);
  EXPECT_NE(message.find("model_type"), std::string::npos) << message;
  EXPECT_EQ(engine->weights_version(), version);
}

class LlamaLoaderDir : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("bindery_llama_test_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    fs::copy(kLLAMA / "llama_gqa/config.json", dir_ / "config.json");
  }
  void TearDown() override { fs::remove_all(dir_); }
  // Writes the llama_gqa checkpoint without `drop`, with `reshape` given a wrong shape and
  // with an extra unused tensor.
  void write_variant(const std::vector<std::string>& drop, const std::string& reshape = "") {
    const io::CheckpointReader src = io::CheckpointReader::open(kLLAMA / "llama_gqa");
    std::vector<io::TensorToWrite> out;
    for (const io::StoredTensor& t : src.tensors()) {
      if (std::find(drop.begin(), drop.end(), t.name) != drop.end()) continue;
      Dims shape = t.shape;
      if (t.name == reshape) shape = {t.count()};
      out.push_back({t.name, t.dtype, shape, t.data});
    }
    const float extra = 1.0f;
    out.push_back({"model.rotary_emb.inv_freq", io::ElementType::kF32, {1}, &extra});
    io::write_safetensors((dir_ / "model.safetensors").string(), out);
  }
  fs::path dir_;
};

TEST_F(LlamaLoaderDir, MissingTensorsAreAllListed) {
  write_variant({"model.norm.weight", "model.layers.1.mlp.up_proj.weight"});
  std::string message;
  EXPECT_EQ(error_of([&] { load_from_hf_checkpoint(dir_.string()); }, &message),
            ErrorCode::kNOT_FOUND);
  EXPECT_NE(message.find("'model.norm.weight'"), std::string::npos) << message;
  EXPECT_NE(message.find("'model.layers.1.mlp.up_proj.weight'"), std::string::npos) << message;
}

TEST_F(LlamaLoaderDir, ShapeMismatchNamesTensorExpectedAndActual) {
  write_variant({}, "model.layers.0.self_attn.k_proj.weight");
  std::string message;
  EXPECT_EQ(error_of([&] { load_from_hf_checkpoint(dir_.string()); }, &message),
            ErrorCode::kSHAPE_MISMATCH);
  EXPECT_NE(message.find("model.layers.0.self_attn.k_proj.weight"), std::string::npos);
  EXPECT_NE(message.find("F32[2048]"), std::string::npos) << message;
  EXPECT_NE(message.find("[32, 64]"), std::string::npos) << message;
}

TEST_F(LlamaLoaderDir, UnusedTensorsAreReportedNotFatal) {
  write_variant({});
  const LoadedLlama loaded = load_from_hf_checkpoint(dir_.string());
  EXPECT_EQ(loaded.unused, std::vector<std::string>{"model.rotary_emb.inv_freq"});
}

TEST(LlamaLoader, Bf16ModelConvertsAndStaysCloseToFp32) {
  auto f32 = engine_of("llama_gqa");
  auto bf16 = engine_of("llama_gqa", {.dtype = DataType::kBF16});
  Generator g32(*f32), g16(*bf16);
  const HostTensor a = g32.logits(kPROMPTS[0]), b = g16.logits(kPROMPTS[0]);
  float worst = 0;
  for (int64_t i = 0; i < a.count(); ++i)
    worst = std::max(worst, std::abs(a.data_as<float>()[i] - b.data_as<float>()[i]));
  EXPECT_GT(worst, 0.0f);   // the weights really are rounded
  EXPECT_LT(worst, 0.25f);  // bf16 weights, f32 compute
}

TEST(LlamaKvCache, PositionsMustContinueTheCache) {
  auto engine = engine_of("llama_gqa", {.max_seq_len = 16});
  auto ctx = engine->create_execution_context();
  const auto run = [&](std::vector<int32_t> ids, std::vector<int32_t> pos,
                       std::vector<int32_t> seq) {
    const auto n = static_cast<int64_t>(ids.size());
    ctx->set_input("input_ids", Weights(DataType::kINT32, {n}, ids.data()));
    ctx->set_input("positions", Weights(DataType::kINT32, {n}, pos.data()));
    ctx->set_input("seq_ids", Weights(DataType::kINT32, {n}, seq.data()));
    std::vector<int32_t> rows(ids.size());
    std::iota(rows.begin(), rows.end(), 0);
    ctx->set_input("logit_rows", Weights(DataType::kINT32, {n}, rows.data()));
    ctx->execute();
  };
  run({1, 2, 3}, {0, 1, 2}, {0, 0, 0});
  EXPECT_EQ(ctx->sequence_length(0), 3);
  std::string message;
  EXPECT_EQ(error_of([&] { run({4}, {5}, {0}); }, &message), ErrorCode::kINVALID_ARGUMENT);
  EXPECT_NE(message.find("at most 3"), std::string::npos) << message;
  EXPECT_EQ(error_of([&] { run({4, 5}, {3, 5}, {0, 0}); }), ErrorCode::kINVALID_ARGUMENT);
  EXPECT_EQ(error_of([&] { run({4}, {16}, {1}); }, &message), ErrorCode::kINVALID_ARGUMENT);
  EXPECT_NE(message.find("max sequence length"), std::string::npos) << message;
  run({4}, {3}, {0});
  EXPECT_EQ(ctx->sequence_length(0), 4);
  ctx->reset_sequence(0);
  EXPECT_EQ(ctx->sequence_length(0), 0);
}

}  // namespace
}  // namespace bindery::models

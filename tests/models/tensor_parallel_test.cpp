// Tensor parallelism of Llama-family models: every rank's engine built from the full
// checkpoint, run together by TensorParallelExecutor, gives the single-rank logits.
// Fixtures have 4 query heads and 2 KV heads, so tp 2 splits the KV heads and tp 4 duplicates
// them (each rank takes the KV head its query head uses).
#include "bindery/tensor_parallel.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <filesystem>

#include "bindery/engine.h"
#include "bindery/error.h"
#include "bindery/models/generation.h"
#include "bindery/models/llama.h"
#include "common/error_util.h"
#include "models/golden_util.h"

namespace bindery::models {
namespace {

namespace fs = std::filesystem;
using bindery::testing::error_of;

struct Thrown {
  ErrorCode code;
  std::string message;
};
template <class Fn>
Thrown thrown_by(Fn&& fn) {
  Thrown t;
  t.code = error_of(std::forward<Fn>(fn), &t.message);
  return t;
}
using bindery::testing::max_abs_diff;

const fs::path kLLAMA = fs::path(BINDERY_SOURCE_DIR) / "tests/fixtures/llama";
const std::vector<std::vector<int32_t>> kPROMPTS = {{1, 5, 9, 23, 42, 7, 100, 3}, {1, 77, 13}};

std::string dir_of(const char* model) { return (kLLAMA / model).string(); }

std::vector<std::unique_ptr<Engine>> ranks_of(const char* model, int tp,
                                              LlamaBuildOptions options = {}) {
  std::vector<std::unique_ptr<Engine>> ranks;
  for (int r = 0; r < tp; ++r) {
    options.mapping = {tp, r};
    ranks.push_back(Engine::create(build_llama(dir_of(model), options)));
  }
  return ranks;
}

std::vector<Engine*> pointers(const std::vector<std::unique_ptr<Engine>>& engines) {
  std::vector<Engine*> out;
  for (const auto& e : engines) out.push_back(e.get());
  return out;
}

int64_t slot_bytes(const Engine& e) {
  int64_t n = 0;
  for (const Slot& s : e.metadata().slots) n += s.size_bytes;
  return n;
}

int count_layers(const Engine& e, LayerType type) {
  int n = 0;
  for (const GraphNode& node : e.metadata().graph.nodes) n += node.type == type;
  return n;
}

struct TpCase {
  const char* model;
  int tp;
};
std::string case_name(const ::testing::TestParamInfo<TpCase>& info) {
  return std::string(info.param.model) + "_tp" + std::to_string(info.param.tp);
}

class TensorParallelLogits : public ::testing::TestWithParam<TpCase> {};

// fp32: the ranks' partial sums add up in another order than one rank's dot products, so the
// logits agree to rounding (issue's bound: 1e-5), and the greedy tokens exactly.
TEST_P(TensorParallelLogits, EqualSingleRankLogitsAndGreedyTokens) {
  const TpCase c = GetParam();
  auto single = Engine::create(build_llama(dir_of(c.model)));
  auto ranks = ranks_of(c.model, c.tp);
  Generator one(*single), split(pointers(ranks));
  for (const auto& prompt : kPROMPTS) {
    const HostTensor expected = one.logits(prompt);
    const HostTensor got = split.logits(prompt);
    const float diff = max_abs_diff(got, expected);
    std::printf("%s tp %d: max |split - single| %.3g over %lld logits\n", c.model, c.tp, diff,
                static_cast<long long>(got.count()));
    EXPECT_LE(diff, 1e-5f) << c.model << " tp " << c.tp;
  }
  const SamplingConfig greedy{.max_new_tokens = 8};
  EXPECT_EQ(split.generate(kPROMPTS, greedy), one.generate(kPROMPTS, greedy));
  // Each rank holds its block of the split weights (norms and the router are replicated).
  for (const auto& r : ranks) EXPECT_LT(slot_bytes(*r), slot_bytes(*single) * 3 / 4);
  EXPECT_GT(count_layers(*ranks[0], LayerType::kALL_REDUCE), 0);
  EXPECT_EQ(count_layers(*ranks[0], LayerType::kALL_GATHER), 1);  // the logits
}

INSTANTIATE_TEST_SUITE_P(Families, TensorParallelLogits,
                         ::testing::Values(TpCase{"llama_gqa", 2}, TpCase{"llama_gqa", 4},
                                           TpCase{"llama3", 2}, TpCase{"llama3", 4},
                                           TpCase{"qwen2", 2}, TpCase{"qwen2", 4},
                                           TpCase{"mistral", 4}, TpCase{"mixtral", 2},
                                           TpCase{"mixtral", 4}, TpCase{"llama_gqa_gptq", 2},
                                           TpCase{"llama_gqa_gptq_act", 4},
                                           TpCase{"llama_gqa_meta", 2}),
                         case_name);

TEST(TensorParallel, RanksMatchTheTransformersGoldens) {
  const auto golden = testing::load_golden(kLLAMA / "llama_gqa");
  auto ranks = ranks_of("llama_gqa", 4);
  Generator gen(pointers(ranks));
  for (size_t i = 0; i < golden.prompts.size(); ++i) {
    EXPECT_LE(max_abs_diff(gen.logits(golden.prompts[i]), golden.logits[i]), 1e-4f);
    EXPECT_EQ(gen.generate({golden.prompts[i]},
                           {.max_new_tokens = static_cast<int64_t>(golden.greedy[i].size() -
                                                                   golden.prompts[i].size())})[0],
              golden.greedy[i]);
  }
}

TEST(TensorParallel, KvHeadsAreDuplicatedWhenRanksOutnumberThem) {
  auto ranks = ranks_of("llama_gqa", 4);
  for (const auto& r : ranks)
    for (const GraphNode& n : r->metadata().graph.nodes)
      if (n.type == LayerType::kATTENTION) {
        EXPECT_EQ(std::get<AttentionParams>(n.params).num_heads, 1);
        EXPECT_EQ(std::get<AttentionParams>(n.params).num_kv_heads, 1);
      }
  // Ranks 0 and 1 share KV head 0, ranks 2 and 3 KV head 1: their fused q|k|v slots agree in
  // the k and v rows, differ in the q rows.
  const auto qkv = [&](int rank) {
    const Engine& e = *ranks[rank];
    for (size_t i = 0; i < e.metadata().slots.size(); ++i)
      if (e.metadata().slots[i].recipe.sources.size() == 3) return e.slot_view(static_cast<int>(i));
    ADD_FAILURE() << "no fused qkv slot";
    return Weights{};
  };
  const Weights a = qkv(0), b = qkv(1), c = qkv(2);
  const int64_t row = a.shape[1] * 4, q_rows = 16;
  EXPECT_NE(std::memcmp(a.values, b.values, q_rows * row), 0);
  const auto* pa = static_cast<const std::byte*>(a.values) + q_rows * row;
  const auto* pb = static_cast<const std::byte*>(b.values) + q_rows * row;
  const auto* pc = static_cast<const std::byte*>(c.values) + q_rows * row;
  EXPECT_EQ(std::memcmp(pa, pb, 32 * row), 0);
  EXPECT_NE(std::memcmp(pa, pc, 32 * row), 0);
}

TEST(TensorParallel, PlansRecordTheirRankAndWeightNamesStayTheCheckpoints) {
  auto ranks = ranks_of("llama_gqa", 2, {.refit = true});
  const PlanMetadata& m = ranks[1]->metadata();
  EXPECT_EQ(m.properties.at("tensor_parallel.size"), "2");
  EXPECT_EQ(m.properties.at("tensor_parallel.rank"), "1");
  // Sources keep the checkpoint's full shapes: each rank refits from the full checkpoint.
  const int q = m.find_source("model.layers.0.self_attn.q_proj.weight");
  ASSERT_GE(q, 0);
  EXPECT_EQ(m.sources[q].desc.dims, (Dims{64, 64}));
}

TEST(TensorParallel, RefitFromTheFullCheckpointReadsOnlyEachRanksSlices) {
  const auto golden_b = testing::load_golden(kLLAMA / "llama_gqa_b");
  auto ranks = ranks_of("llama_gqa", 2, {.refit = true});
  auto single = Engine::create(build_llama(dir_of("llama_gqa"), {.refit = true}));
  const RefitSummary whole = refit_from_hf_checkpoint(*single, dir_of("llama_gqa_b"));
  int64_t read = 0;
  for (auto& r : ranks) {
    const RefitSummary s = refit_from_hf_checkpoint(*r, dir_of("llama_gqa_b"));
    // Norms are replicated; everything else is split in two.
    EXPECT_LT(s.bytes_read, whole.bytes_read * 6 / 10);
    EXPECT_GT(s.bytes_read, whole.bytes_read * 4 / 10);
    read += s.bytes_read;
  }
  // Only the norms (2 per layer + the final one, hidden 64, f32) are read by both ranks.
  const LlamaConfig c = config_of(single->metadata());
  const int64_t norms = (2 * c.num_hidden_layers + 1) * c.hidden_size * 4;
  EXPECT_EQ(read, whole.bytes_read + norms);
  Generator gen(pointers(ranks));
  for (size_t i = 0; i < golden_b.prompts.size(); ++i)
    EXPECT_LE(max_abs_diff(gen.logits(golden_b.prompts[i]), golden_b.logits[i]), 1e-4f);
  // Bit-identical to the ranks built from B.
  auto built_b = ranks_of("llama_gqa_b", 2);
  for (int r = 0; r < 2; ++r)
    for (size_t i = 0; i < built_b[r]->metadata().slots.size(); ++i)
      EXPECT_EQ(ranks[r]->slot_checksum(static_cast<int>(i)),
                built_b[r]->slot_checksum(static_cast<int>(i)))
          << "rank " << r << " slot " << built_b[r]->metadata().slots[i].name;
}

// Blocks of every kind: leading rows (q/k/v, gate/up: views), inner columns (o/down, Mixtral's
// w2, GPTQ's packed columns: copied), converted types (bf16 checkpoint, f32 engine).
TEST(TensorParallel, StrippedRanksRefitToTheirBuildsBitForBit) {
  for (const char* model : {"mixtral", "llama_gqa_gptq_act", "llama3"}) {
    for (const std::optional<DataType> dtype : {std::optional<DataType>{}, {DataType::kBF16}}) {
      auto stripped = ranks_of(model, 2, {.dtype = dtype, .strip = true});
      auto built = ranks_of(model, 2, {.dtype = dtype});
      for (int r = 0; r < 2; ++r) {
        refit_from_hf_checkpoint(*stripped[r], dir_of(model));
        for (size_t i = 0; i < built[r]->metadata().slots.size(); ++i)
          EXPECT_EQ(stripped[r]->slot_checksum(static_cast<int>(i)),
                    built[r]->slot_checksum(static_cast<int>(i)))
              << model << " rank " << r << " slot " << built[r]->metadata().slots[i].name;
      }
    }
  }
}

TEST(TensorParallel, StrippedRanksRunAfterARefitFromTheCheckpoint) {
  const auto golden = testing::load_golden(kLLAMA / "qwen2");
  auto ranks = ranks_of("qwen2", 4, {.strip = true});
  for (auto& r : ranks) {
    // A rank's stripped plan loads (its slots empty until refit).
    EXPECT_FALSE(Engine::create(Plan::from_memory(r->serialize({.exclude_weights = true})))
                     ->weights_complete());
    EXPECT_FALSE(r->weights_complete());
    refit_from_hf_checkpoint(*r, dir_of("qwen2"));
  }
  Generator gen(pointers(ranks));
  EXPECT_LE(max_abs_diff(gen.logits(golden.prompts[0]), golden.logits[0]), 1e-4f);
}

TEST(TensorParallel, SplitsThatDoNotDivideAreNamedErrors) {
  const auto e = thrown_by([] {
    build_llama(dir_of("llama_gqa"), LlamaBuildOptions{.mapping = {3, 0}});
  });
  EXPECT_EQ(e.code, ErrorCode::kINVALID_ARGUMENT);
  EXPECT_NE(e.message.find("num_attention_heads 4 is not a multiple of 3"), std::string::npos)
      << e.message;
  const auto r = thrown_by([] { load_from_hf_checkpoint(dir_of("llama_gqa"), {2, 2}); });
  EXPECT_EQ(r.code, ErrorCode::kINVALID_ARGUMENT);
  EXPECT_NE(r.message.find("tp_rank 2 is not a rank"), std::string::npos) << r.message;
  LlamaConfig c = LlamaConfig::load(dir_of("llama_gqa"));
  c.num_attention_heads = 12;
  c.num_key_value_heads = 3;
  const auto kv = thrown_by([&] { check_mapping(c, {2, 0}); });
  EXPECT_NE(kv.message.find("num_key_value_heads 3"), std::string::npos) << kv.message;
  c.num_key_value_heads = 4;
  c.vocab_size = 255;
  const auto vocab = thrown_by([&] { check_mapping(c, {2, 0}); });
  EXPECT_NE(vocab.message.find("vocab_size 255"), std::string::npos) << vocab.message;
}

TEST(TensorParallel, ARankEngineAloneOrInTheWrongGroupIsRefused) {
  auto ranks = ranks_of("llama_gqa", 2);
  auto context = ranks[0]->create_execution_context();
  std::vector<int32_t> ids = {1, 2}, pos = {0, 1}, seq = {0, 0};
  context->set_input("input_ids", Weights(DataType::kINT32, {2}, ids.data()));
  context->set_input("positions", Weights(DataType::kINT32, {2}, pos.data()));
  context->set_input("seq_ids", Weights(DataType::kINT32, {2}, seq.data()));
  context->set_input("logit_rows", Weights(DataType::kINT32, {2}, pos.data()));
  const auto e = thrown_by([&] { context->execute(); });
  EXPECT_EQ(e.code, ErrorCode::kINVALID_ARGUMENT);
  EXPECT_NE(e.message.find("2-rank tensor-parallel group"), std::string::npos) << e.message;
  const auto gen = thrown_by([&] { Generator alone(*ranks[0]); });
  EXPECT_NE(gen.message.find("built for a group of 2 rank(s), not 1"), std::string::npos)
      << gen.message;
  const auto order = thrown_by([&] { TensorParallelExecutor({ranks[1].get(), ranks[0].get()}); });
  EXPECT_NE(order.message.find("was built as rank 1"), std::string::npos) << order.message;
  auto four = ranks_of("llama_gqa", 4);
  const auto size = thrown_by([&] { TensorParallelExecutor({four[0].get(), four[1].get()}); });
  EXPECT_NE(size.message.find("group of 4 rank(s), not 2"), std::string::npos) << size.message;
}

TEST(TensorParallel, AFailingRankReleasesTheOthersAndTheExecutorRunsAgain) {
  auto ranks = ranks_of("llama_gqa", 2);
  TensorParallelExecutor tp(pointers(ranks));
  std::vector<int32_t> ids = {1, 2, 3}, pos = {0, 1, 2}, seq = {0, 0, 0};
  const auto bind = [&](ExecutionContext& c, std::vector<int32_t>& token_ids) {
    c.set_input("input_ids", Weights(DataType::kINT32, {3}, token_ids.data()));
    c.set_input("positions", Weights(DataType::kINT32, {3}, pos.data()));
    c.set_input("seq_ids", Weights(DataType::kINT32, {3}, seq.data()));
    c.set_input("logit_rows", Weights(DataType::kINT32, {3}, pos.data()));
  };
  // Rank 1 runs 2 tokens where rank 0 runs 3: their first all-reduce disagrees in size.
  std::vector<int32_t> short_ids = {1, 2};
  bind(tp.context(0), ids);
  tp.context(1).set_input("input_ids", Weights(DataType::kINT32, {2}, short_ids.data()));
  tp.context(1).set_input("positions", Weights(DataType::kINT32, {2}, pos.data()));
  tp.context(1).set_input("seq_ids", Weights(DataType::kINT32, {2}, seq.data()));
  tp.context(1).set_input("logit_rows", Weights(DataType::kINT32, {2}, pos.data()));
  const auto e = thrown_by([&] { tp.execute(); });
  EXPECT_EQ(e.code, ErrorCode::kABORTED);
  EXPECT_NE(e.message.find("another shape"), std::string::npos) << e.message;
  tp.reset_kv_cache();
  bind(tp.context(0), ids);
  bind(tp.context(1), ids);
  tp.execute();
  EXPECT_EQ(tp.output("logits").shape, (Dims{3, 256}));
}

}  // namespace
}  // namespace bindery::models

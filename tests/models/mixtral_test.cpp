// Mixtral (a sparse mixture of experts in every layer): its config, routing against
// transformers' router (ties included), the experts stacked into one slot per layer whose
// experts refit one by one, and generation. Goldens: tests/models/llama_golden_test.cpp.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "bindery/engine.h"
#include "bindery/error.h"
#include "bindery/models/generation.h"
#include "bindery/models/llama.h"
#include "bindery/recipe.h"
#include "bindery/refitter.h"
#include "common/error_util.h"
#include "models/generation_util.h"
#include "runtime/cpu/kernel_common.h"

namespace bindery::models {
namespace {

namespace fs = std::filesystem;
using bindery::testing::error_of;
using nlohmann::json;

const fs::path kLLAMA = fs::path(BINDERY_SOURCE_DIR) / "tests/fixtures/llama";
const fs::path kMIXTRAL = kLLAMA / "mixtral";
const std::vector<std::vector<int32_t>> kPROMPTS = {
    {1, 5, 9, 23, 42, 7, 100, 3}, {1, 77, 13}, {1, 200, 150, 99, 31, 64}, {4}};

std::unique_ptr<Engine> mixtral(LlamaBuildOptions options = {}) {
  return Engine::create(build_llama(kMIXTRAL.string(), options));
}

json config_json() {
  std::ifstream in(kMIXTRAL / "config.json");
  return json::parse(in);
}

std::string expert(int layer, int e, const char* w) {
  return "model.layers." + std::to_string(layer) + ".block_sparse_moe.experts." +
         std::to_string(e) + "." + w + ".weight";
}

// The slot whose recipe is made of exactly `sources`, or -1.
int slot_of(const Engine& engine, const std::vector<std::string>& sources) {
  const auto& slots = engine.metadata().slots;
  for (size_t i = 0; i < slots.size(); ++i)
    if (slots[i].recipe.sources == sources) return static_cast<int>(i);
  return -1;
}

std::vector<std::string> gate_up_sources(int layer) {
  std::vector<std::string> s;
  for (int e = 0; e < 4; ++e) {
    s.push_back(expert(layer, e, "w1"));
    s.push_back(expert(layer, e, "w3"));
  }
  return s;
}

TEST(MixtralConfig, ReadsExpertsWithTransformersDefaultsAndRoundTrips) {
  const LlamaConfig c = LlamaConfig::load(kMIXTRAL.string());
  EXPECT_EQ(c.model_type, "mixtral");
  EXPECT_TRUE(c.is_moe());
  EXPECT_EQ(c.num_local_experts, 4);
  EXPECT_EQ(c.num_experts_per_tok, 2);
  EXPECT_EQ(c.intermediate_size, 64);
  EXPECT_FALSE(c.sliding_window.has_value());  // "sliding_window": null
  const LlamaConfig back = LlamaConfig::from_json(c.to_json(), "round trip");
  EXPECT_EQ(back.num_local_experts, 4);
  EXPECT_EQ(back.num_experts_per_tok, 2);
  EXPECT_FALSE(LlamaConfig::load((kLLAMA / "llama_gqa").string()).is_moe());

  json j = config_json();
  j.erase("num_local_experts");
  j.erase("num_experts_per_tok");
  j["sliding_window"] = 4;
  j["attention_bias"] = true;  // transformers' Mixtral has no biases whatever this says
  const LlamaConfig d = LlamaConfig::from_json(j.dump(), "defaults");
  EXPECT_EQ(d.num_local_experts, 8);
  EXPECT_EQ(d.num_experts_per_tok, 2);
  EXPECT_EQ(d.sliding_window, 4);
  EXPECT_FALSE(d.qkv_bias());
  EXPECT_FALSE(d.o_bias());

  j["num_local_experts"] = 4;
  j["num_experts_per_tok"] = 5;
  try {
    LlamaConfig::from_json(j.dump(), "bad.json");
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kINVALID_ARGUMENT);
    EXPECT_NE(std::string(e.what()).find("bad.json: num_experts_per_tok (5) must be between 1 "
                                         "and num_local_experts (4)"),
              std::string::npos)
        << e.what();
  }
}

// tools/make_llama_fixtures.py ran transformers' MixtralTopKRouter on logits with ties (equal
// rows, small integers, probabilities of 0): torch.topk's choice among equal values is what its
// CPU selection algorithm leaves, and the kernel's routing must be the same.
TEST(MixtralRouting, TopKMatchesTransformersRouterIncludingTies) {
  std::ifstream in(kLLAMA / "router_cases.json");
  int cases = 0;
  for (const json& c : json::parse(in)) {
    const int64_t e = c.at("experts"), k = c.at("top_k");
    SCOPED_TRACE("experts " + std::to_string(e) + ", top_k " + std::to_string(k));
    const auto rows = c.at("logits").get<std::vector<std::vector<float>>>();
    std::vector<float> logits;
    for (const auto& r : rows) logits.insert(logits.end(), r.begin(), r.end());
    const MoeParams p{e, k, 1, UnaryOp::kSILU, true};
    const auto tokens = static_cast<int64_t>(rows.size());
    const cpu::detail::MoeRoute route = cpu::detail::moe_route(p, logits.data(), tokens);
    const auto indices = c.at("indices").get<std::vector<std::vector<int64_t>>>();
    const auto weights = c.at("weights").get<std::vector<std::vector<double>>>();
    for (int64_t t = 0; t < tokens; ++t)
      for (int64_t i = 0; i < k; ++i) {
        EXPECT_EQ(route.experts[t * k + i], indices[t][i]) << "token " << t << " choice " << i;
        EXPECT_NEAR(route.weights[t * k + i], weights[t][i], 1e-6) << "token " << t;
      }
    ++cases;
  }
  EXPECT_EQ(cases, 9);
}

TEST(MixtralBuild, ExpertsAreStackedIntoOneSeparableSlotPerLayer) {
  auto engine = mixtral({.refit = true});
  int moe_nodes = 0;
  for (const GraphNode& n : engine->metadata().graph.nodes) moe_nodes += n.type == LayerType::kMOE;
  EXPECT_EQ(moe_nodes, 2);
  for (int layer = 0; layer < 2; ++layer) {
    SCOPED_TRACE("layer " + std::to_string(layer));
    std::vector<std::string> down;
    for (int e = 0; e < 4; ++e) down.push_back(expert(layer, e, "w2"));
    const int gu = slot_of(*engine, gate_up_sources(layer)), dn = slot_of(*engine, down);
    ASSERT_GE(gu, 0);
    ASSERT_GE(dn, 0);
    const Slot& g = engine->metadata().slots[gu];
    const Slot& d = engine->metadata().slots[dn];
    EXPECT_EQ(g.desc.dims, (Dims{4 * 2 * 64, 64}));
    EXPECT_EQ(d.desc.dims, (Dims{4 * 64, 64}));
    for (const Slot* s : {&g, &d}) {
      EXPECT_TRUE(recipe_is_separable(s->recipe)) << s->recipe.to_string();
      EXPECT_TRUE(s->recipe.to_string().starts_with("concat(axis=0")) << s->recipe.to_string();
      EXPECT_TRUE(s->refittable);
    }
    const std::string router =
        "model.layers." + std::to_string(layer) + ".block_sparse_moe.gate.weight";
    EXPECT_GE(slot_of(*engine, {router}), 0);
  }
}

// Refitting one expert's up projection rewrites its rows of the stacked slot and no other
// byte of any slot; setting it back gives an engine bit-identical to a fresh build.
TEST(MixtralRefit, OneExpertRewritesOnlyItsRowsOfTheStack) {
  auto engine = mixtral({.refit = true});
  const int slot = slot_of(*engine, gate_up_sources(1));
  ASSERT_GE(slot, 0);
  const int slots = static_cast<int>(engine->metadata().slots.size());
  std::vector<uint64_t> checksums(slots);
  for (int i = 0; i < slots; ++i) checksums[i] = engine->slot_checksum(i);
  const Weights view = engine->slot_view(slot);
  const auto* start = static_cast<const float*>(view.values);
  const std::vector<float> before(start, start + view.count());

  const std::string name = expert(1, 2, "w3");
  Refitter refitter(*engine);
  const HostTensor original = refitter.get_named_weights(name);
  HostTensor changed = HostTensor::copy_of(original.view());
  for (int64_t i = 0; i < changed.count(); ++i) changed.data_as<float>()[i] += 0.5f;
  refitter.set_named_weights(name, changed.view());
  EXPECT_TRUE(refitter.missing_weights().empty());  // the stack refits partially
  refitter.refit();
  EXPECT_EQ(refitter.last_refit_slots(), 1);

  // Expert 2's up rows are [2 * 128 + 64, 3 * 128) of the [512, 64] stack.
  const auto* after = static_cast<const float*>(engine->slot_view(slot).values);
  const int64_t h = 64, first = (2 * 128 + 64) * h, last = 3 * 128 * h;
  for (int64_t i = 0; i < static_cast<int64_t>(before.size()); ++i) {
    if (i >= first && i < last)
      ASSERT_EQ(after[i], changed.data_as<float>()[i - first]) << i;
    else
      ASSERT_EQ(std::memcmp(&after[i], &before[i], sizeof(float)), 0) << i;
  }
  for (int i = 0; i < slots; ++i)
    if (i != slot) EXPECT_EQ(engine->slot_checksum(i), checksums[i]) << "slot " << i;
  EXPECT_NE(engine->slot_checksum(slot), checksums[slot]);

  refitter.set_named_weights(name, original.view());
  refitter.refit();
  for (int i = 0; i < slots; ++i) EXPECT_EQ(engine->slot_checksum(i), checksums[i]);
  auto fresh = mixtral();
  Generator a(*engine), b(*fresh);
  const HostTensor la = a.logits(kPROMPTS[0]), lb = b.logits(kPROMPTS[0]);
  EXPECT_EQ(std::memcmp(la.data(), lb.data(), la.size_bytes()), 0);
}

TEST(MixtralRefit, StrippedPlanRunsAfterRefitFromTheCheckpoint) {
  auto engine = mixtral({.strip = true});
  Generator gen(*engine);
  EXPECT_EQ(error_of([&] { gen.logits(kPROMPTS[1]); }), ErrorCode::kMISSING_WEIGHTS);
  const RefitSummary summary = refit_from_hf_checkpoint(*engine, kMIXTRAL.string());
  EXPECT_EQ(summary.slots_changed, summary.slots_total);
  auto fresh = mixtral();
  Generator gf(*fresh);
  const HostTensor la = gen.logits(kPROMPTS[1]), lb = gf.logits(kPROMPTS[1]);
  EXPECT_EQ(std::memcmp(la.data(), lb.data(), la.size_bytes()), 0);
}

TEST(MixtralGeneration, BatchEqualsOneByOneGreedyAndSampled) {
  auto engine = mixtral();
  testing::expect_batch_equals_one_by_one(*engine, kPROMPTS);
}

// Experts in bf16 are widened panel by panel inside the kernel; compute stays f32.
TEST(MixtralLoader, Bf16ModelStaysCloseToFp32) {
  auto f32 = mixtral();
  auto bf16 = mixtral({.dtype = DataType::kBF16});
  Generator g32(*f32), g16(*bf16);
  const HostTensor a = g32.logits(kPROMPTS[0]), b = g16.logits(kPROMPTS[0]);
  float worst = 0;
  for (int64_t i = 0; i < a.count(); ++i)
    worst = std::max(worst, std::abs(a.data_as<float>()[i] - b.data_as<float>()[i]));
  EXPECT_GT(worst, 0.0f);
  EXPECT_LT(worst, 0.25f);
  EXPECT_EQ(g16.generate({kPROMPTS[0]}, {.max_new_tokens = 8})[0],
            g32.generate({kPROMPTS[0]}, {.max_new_tokens = 8})[0]);
}

}  // namespace
}  // namespace bindery::models

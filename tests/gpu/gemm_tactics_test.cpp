// GEMM tactics: chosen on the GPU, stored in the plan, kept through save and load, run by the
// engines made from it; tactics of another device are ignored with a warning, and a corrupt
// tactics property is a named error.

#include "bindery/gemm_tactics.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <mutex>
#include <nlohmann/json.hpp>
#include <numeric>

#include "bindery/engine.h"
#include "bindery/error.h"
#include "bindery/logging.h"
#include "bindery/models/generation.h"
#include "bindery/models/llama.h"
#include "common/gpu_util.h"
#include "models/golden_util.h"

namespace bindery::models {
namespace {

namespace fs = std::filesystem;
using testing::max_abs_diff;
const fs::path kMODEL = fs::path(BINDERY_SOURCE_DIR) / "models/bible-llama";

// A 64-position cache: the buckets over 8 tokens a test asks for up to 64 are all there are.
Plan bf16_plan() {
  return build_llama(kMODEL.string(), {.dtype = DataType::kBF16, .max_seq_len = 64});
}

// 40 tokens: the prefill GEMMs run cuBLASLt (m > 8), in the m <= 64 bucket.
std::vector<int32_t> prompt() {
  std::vector<int32_t> p(40);
  std::iota(p.begin(), p.end(), 3);
  return p;
}

// Verbose messages logged while `fn` runs.
template <class Fn>
std::vector<std::string> logged(Fn&& fn) {
  std::vector<std::string> lines;
  std::mutex mutex;
  const LogLevel level = log_level();
  set_log_level(LogLevel::kVERBOSE);
  set_log_sink([&](LogLevel, std::string_view m) {
    const std::lock_guard<std::mutex> lock(mutex);
    lines.emplace_back(m);
  });
  try {
    fn();
  } catch (...) {
    set_log_sink(nullptr);
    set_log_level(level);
    throw;
  }
  set_log_sink(nullptr);
  set_log_level(level);
  return lines;
}

int64_t count_with(const std::vector<std::string>& lines, const std::string& text) {
  return std::count_if(lines.begin(), lines.end(),
                       [&](const std::string& l) { return l.find(text) != std::string::npos; });
}

TEST(GemmTactics, ChosenOnTheGpuKeptInThePlanAndRunByItsEngines) {
  REQUIRE_GPU();
  Plan plan = bf16_plan();
  const TacticReport r = select_gemm_tactics(
      plan, Device::cuda(0), {.token_buckets = {4, 16, 64}, .candidates = 4, .repeats = 2});
  std::printf("%lld problems on %s in %.2f s, %lld differ from the first choice\n",
              static_cast<long long>(r.problems), r.device.c_str(), r.seconds,
              static_cast<long long>(r.differs_from_heuristic));
  const auto& props = plan.metadata().properties;
  ASSERT_TRUE(props.count(kGEMM_TACTICS_PROPERTY));
  const auto j = nlohmann::json::parse(props.at(kGEMM_TACTICS_PROPERTY));
  EXPECT_EQ(static_cast<int64_t>(j.at("entries").size()), r.problems);
  EXPECT_GT(r.problems, 0);
  EXPECT_EQ(r.problems % 2, 0);  // two buckets over 8 tokens per shape
  for (const auto& e : j.at("entries")) EXPECT_GT(e.at("m").get<int64_t>(), 8);
  EXPECT_LE(r.chosen_ms, r.heuristic_ms * 1.0001);

  // Through a file and back, then run: every prefill GEMM takes the plan's tactic.
  const Plan loaded = Plan::from_memory(plan.serialize());
  EXPECT_EQ(loaded.metadata().properties.at(kGEMM_TACTICS_PROPERTY),
            props.at(kGEMM_TACTICS_PROPERTY));
  auto tuned = Engine::create(Plan::from_memory(plan.serialize()), Device::cuda(0));
  auto plain = Engine::create(bf16_plan(), Device::cuda(0));
  HostTensor tuned_logits, plain_logits;
  const auto lines = logged([&] { tuned_logits = Generator(*tuned).logits(prompt()); });
  EXPECT_GT(count_with(lines, "runs the plan's tactic"), 0);
  EXPECT_EQ(count_with(lines, "runs cuBLASLt's first choice"), 0);
  plain_logits = Generator(*plain).logits(prompt());
  // Other algorithms sum in other orders: bf16 activations round differently, no more.
  float largest = 0;
  for (int64_t i = 0; i < plain_logits.count(); ++i)
    largest = std::max(largest, std::abs(plain_logits.data_as<float>()[i]));
  EXPECT_LE(max_abs_diff(tuned_logits, plain_logits), 0.02f * largest);
  const SamplingConfig greedy{.max_new_tokens = 8};
  EXPECT_EQ(Generator(*tuned).generate({prompt()}, greedy),
            Generator(*plain).generate({prompt()}, greedy));
}

TEST(GemmTactics, ThoseOfAnotherDeviceAreIgnoredWithAWarning) {
  REQUIRE_GPU();
  Plan plan = bf16_plan();
  select_gemm_tactics(plan, Device::cuda(0),
                      {.token_buckets = {64}, .candidates = 2, .repeats = 1});
  auto j = nlohmann::json::parse(plan.metadata().properties.at(kGEMM_TACTICS_PROPERTY));
  j["device"] = "Some Other GPU, sm_80, cuBLASLt 1";
  plan.mutable_metadata().properties[kGEMM_TACTICS_PROPERTY] = j.dump();
  auto engine = Engine::create(std::move(plan), Device::cuda(0));
  auto plain = Engine::create(bf16_plan(), Device::cuda(0));
  HostTensor logits;
  const auto lines = logged([&] { logits = Generator(*engine).logits(prompt()); });
  EXPECT_EQ(count_with(lines, "were chosen on Some Other GPU"), 1);
  EXPECT_EQ(count_with(lines, "runs the plan's tactic"), 0);
  EXPECT_EQ(max_abs_diff(logits, Generator(*plain).logits(prompt())), 0.f);
}

TEST(GemmTactics, ACorruptTacticsPropertyIsANamedError) {
  REQUIRE_GPU();
  for (const std::string& bad :
       {std::string("{not json"), std::string(R"({"device": "x", "entries": [{"ab": "bf16"}]})"),
        std::string(R"({"device": "x", "entries": [{"ab": "bf16", "c": "bf16", "m": 16, "n": 8,)"
                    R"( "k": 8, "algo": "12ab", "workspace": 0}]})")}) {
    Plan plan = bf16_plan();
    plan.mutable_metadata().properties[kGEMM_TACTICS_PROPERTY] = bad;
    auto engine = Engine::create(std::move(plan), Device::cuda(0));
    try {
      engine->create_execution_context();
      ADD_FAILURE() << "accepted tactics " << bad;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kCORRUPT_FILE) << e.what();
      EXPECT_NE(std::string(e.what()).find(kGEMM_TACTICS_PROPERTY), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace bindery::models

// Refit is tested against a fresh build: engine A refit with B's weights must give the
// outputs of an engine built from B, bit-exactly on the CPU (acceptance a, b, g, h).

#include <algorithm>

#include "bindery/refitter.h"
#include "common/engine_util.h"

namespace bindery::testing {
namespace {

class RefitExamples : public ::testing::TestWithParam<ExampleCase> {};

TEST_P(RefitExamples, RefitWithBMatchesFreshBuildOfBBitExact) {
  const ExampleCase& c = GetParam();
  const auto a = c.weights(1), b = c.weights(2);
  const HostTensor x = c.make_input();
  const auto cfg = config_with({BuilderFlag::kREFIT});
  auto engine = build_engine(c.network(a), cfg);
  const HostTensor before = run(*engine, c.input, x, c.output);
  Refitter r(*engine);
  for (const auto& [name, w] : b) r.set_named_weights(name, w.view());
  EXPECT_TRUE(r.missing_weights().empty());
  r.refit();
  const HostTensor after = run(*engine, c.input, x, c.output);
  const HostTensor expected = run(*build_engine(c.network(b), cfg), c.input, x, c.output);
  EXPECT_FALSE(bit_equal(before, after)) << "refit did not change the outputs";
  EXPECT_TRUE(bit_equal(after, expected));
  EXPECT_EQ(engine->weights_version(), 1u);
}

TEST_P(RefitExamples, StrippedPlanRefitFromAllWeightsEqualsFullPlan) {
  const ExampleCase& c = GetParam();
  const auto a = c.weights(1);
  const HostTensor x = c.make_input();
  auto full = build_engine(c.network(a), config_with({BuilderFlag::kREFIT}));
  const Plan stripped_plan =
      Builder().build(c.network(a), config_with({BuilderFlag::kREFIT, BuilderFlag::kSTRIP_PLAN}));
  EXPECT_TRUE(stripped_plan.metadata().stripped);
  auto engine = Engine::create(Plan::from_memory(stripped_plan.serialize()));
  EXPECT_FALSE(engine->weights_complete());
  expect_error(ErrorCode::kMISSING_WEIGHTS, [&] { run(*engine, c.input, x, c.output); });
  Refitter r(*engine);
  auto all = r.all_weights(), missing = r.missing_weights();
  std::sort(all.begin(), all.end());
  EXPECT_EQ(missing, all);
  for (const auto& name : all) r.set_named_weights(name, a.at(name).view());
  r.refit();
  EXPECT_TRUE(engine->weights_complete());
  EXPECT_TRUE(bit_equal(run(*engine, c.input, x, c.output), run(*full, c.input, x, c.output)));
}

TEST_P(RefitExamples, RefitFlagWithoutRefitGivesOutputsOfPlainBuild) {
  const ExampleCase& c = GetParam();
  const auto a = c.weights(3);
  const HostTensor x = c.make_input();
  auto refittable = build_engine(c.network(a), config_with({BuilderFlag::kREFIT}));
  auto plain = build_engine(c.network(a), BuilderConfig{});
  EXPECT_TRUE(refittable->is_refittable());
  EXPECT_FALSE(plain->is_refittable());
  EXPECT_TRUE(bit_equal(run(*refittable, c.input, x, c.output), run(*plain, c.input, x, c.output)));
}

TEST_P(RefitExamples, ContextsCreatedBeforeRefitSeeNewWeights) {
  const ExampleCase& c = GetParam();
  const auto a = c.weights(1), b = c.weights(2);
  const HostTensor x = c.make_input();
  const auto cfg = config_with({BuilderFlag::kREFIT});
  auto engine = build_engine(c.network(a), cfg);
  auto ctx1 = engine->create_execution_context();
  auto ctx2 = engine->create_execution_context();
  ctx1->set_input(c.input, x.view());
  ctx2->set_input(c.input, x.view());
  ctx1->execute();
  Refitter r(*engine);
  for (const auto& [name, w] : b) r.set_named_weights(name, w.view());
  r.refit();
  ctx1->execute();
  ctx2->execute();
  const HostTensor expected = run(*build_engine(c.network(b), cfg), c.input, x, c.output);
  EXPECT_TRUE(bit_equal(HostTensor::copy_of(ctx1->output(c.output)), expected));
  EXPECT_TRUE(bit_equal(HostTensor::copy_of(ctx2->output(c.output)), expected));
}

TEST_P(RefitExamples, FullPlanSurvivesSaveAndLoad) {
  const ExampleCase& c = GetParam();
  const auto a = c.weights(4);
  const HostTensor x = c.make_input();
  Plan plan = Builder().build(c.network(a), config_with({BuilderFlag::kREFIT}));
  auto reloaded = Engine::create(Plan::from_memory(plan.serialize()));
  auto engine = Engine::create(std::move(plan));
  EXPECT_TRUE(bit_equal(run(*engine, c.input, x, c.output), run(*reloaded, c.input, x, c.output)));
}

INSTANTIATE_TEST_SUITE_P(Examples, RefitExamples, ::testing::ValuesIn(example_cases()),
                         [](const auto& info) { return info.param.name; });

TEST(StrippedPlan, TenMillionWeightPlanStripsBelowOnePercent) {
  const examples::MlpConfig big{
      .in = 1024, .hidden = 3328, .out = 1024, .layers = 1};  // 10.2M weights
  const auto w = examples::mlp_weights(big, 1);
  int64_t count = 0;
  for (const auto& [n, t] : w) count += t.count();
  ASSERT_GE(count, 10'000'000);
  const Plan plan =
      Builder().build(examples::mlp_network(big, w), config_with({BuilderFlag::kREFIT}));
  const size_t full = plan.serialize().size();
  const size_t stripped = plan.serialize({.exclude_weights = true}).size();
  EXPECT_LT(static_cast<double>(stripped), 0.01 * static_cast<double>(full))
      << stripped << " vs " << full;
}

}  // namespace
}  // namespace bindery::testing

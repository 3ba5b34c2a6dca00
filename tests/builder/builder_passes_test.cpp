// What each builder pass does, seen from the plan it writes.

#include <algorithm>
#include <cmath>

#include "bindery/refitter.h"
#include "common/engine_util.h"

namespace bindery::testing {
namespace {

bool report_has(const Plan& p, const std::string& kind, const std::string& text) {
  return std::any_of(p.metadata().report.begin(), p.metadata().report.end(),
                     [&](const BuildReportEntry& e) {
                       return e.kind == kind && e.description.find(text) != std::string::npos;
                     });
}

int count_nodes(const Plan& p, LayerType t) {
  return static_cast<int>(std::count_if(p.metadata().graph.nodes.begin(),
                                        p.metadata().graph.nodes.end(),
                                        [&](const GraphNode& n) { return n.type == t; }));
}

TEST(Builder, FusesMatmulsSharingAnInputIntoOneConcatSlot) {
  const auto c = example_cases()[0];
  const Plan p = Builder().build(c.network(c.weights(1)), config_with({BuilderFlag::kREFIT}));
  EXPECT_EQ(count_nodes(p, LayerType::kMATMUL), 4);  // per layer: fused gate|up, down
  int concat_slots = 0;
  for (const Slot& s : p.metadata().slots)
    if (s.recipe.sources.size() == 2) {
      ++concat_slots;
      EXPECT_TRUE(s.refittable);
      EXPECT_TRUE(recipe_is_separable(s.recipe)) << s.recipe.to_string();
    }
  EXPECT_EQ(concat_slots, 2);
  EXPECT_TRUE(report_has(p, "fusion", "fused into one matmul"));
}

TEST(Builder, FoldsBatchNormIntoConvByRecipeAndFusesActivations) {
  const auto c = example_cases()[1];
  const Plan p = Builder().build(c.network(c.weights(1)), config_with({BuilderFlag::kREFIT}));
  EXPECT_EQ(count_nodes(p, LayerType::kBATCHNORM), 0);
  EXPECT_EQ(count_nodes(p, LayerType::kUNARY), 0);  // gelu and relu fused
  bool fold_recipe = false;
  for (const Slot& s : p.metadata().slots)
    for (const RecipeStep& st : s.recipe.steps) fold_recipe |= st.op == RecipeOp::kFOLD_BN_KERNEL;
  EXPECT_TRUE(fold_recipe);
  // clip.max is refittable: baking it into the epilogue would freeze it.
  EXPECT_EQ(count_nodes(p, LayerType::kELEMENTWISE), 2);  // min(clip) and the fc bias
  EXPECT_TRUE(report_has(p, "given_up", "clip.max"));
}

TEST(Builder, BakesActivationConstantsWhenNotRefittable) {
  const auto c = example_cases()[1];
  const Plan p = Builder().build(c.network(c.weights(1)), BuilderConfig{});
  EXPECT_EQ(count_nodes(p, LayerType::kELEMENTWISE), 1);  // only the fc bias remains
  EXPECT_TRUE(report_has(p, "fusion", "(min) fused"));
}

TEST(Builder, FoldsLayoutOpsOnRefittableWeightsIntoRecipes) {
  Network net;
  Tensor* x = net.add_input("x", DataType::kFLOAT, {kDYNAMIC, 4});
  HostTensor w = examples::random_tensor({4, 6}, 1);
  Tensor* wt =
      net.add_transpose(net.add_constant(w.view(), "w")->output(0), {1, 0})->output(0);  // [6, 4]
  Tensor* y = net.add_matmul(x, false, wt, true)->output(0);
  y->set_name("y");
  net.mark_output(y);
  const Plan p = Builder().build(net, config_with({BuilderFlag::kREFIT}));
  EXPECT_EQ(count_nodes(p, LayerType::kTRANSPOSE), 0);
  ASSERT_EQ(p.metadata().slots.size(), 1u);
  EXPECT_TRUE(p.metadata().slots[0].refittable);
  EXPECT_EQ(p.metadata().slots[0].recipe.steps.back().op, RecipeOp::kTRANSPOSE);
  // Refit through the transpose: equal to a fresh build with the new w.
  auto engine = Engine::create(Builder().build(net, config_with({BuilderFlag::kREFIT})));
  HostTensor w2 = examples::random_tensor({4, 6}, 2);
  Refitter r(*engine);
  r.set_named_weights("w", w2.view());
  r.refit();
  EXPECT_TRUE(bit_equal(r.get_named_weights("w"), w2));
}

TEST(Builder, ComputesNonLayoutConstantsOnlyWhenNotRefittable) {
  auto make = [](const HostTensor& w) {
    Network net;
    Tensor* x = net.add_input("x", DataType::kFLOAT, {3});
    Tensor* e = net.add_unary(net.add_constant(w.view(), "w")->output(0), UnaryOp::kEXP)->output(0);
    Tensor* y = net.add_elementwise(x, e, ElementwiseOp::kPROD)->output(0);
    y->set_name("y");
    net.mark_output(y);
    return net;
  };
  HostTensor w = examples::random_tensor({3}, 5);
  const Plan plain = Builder().build(make(w), BuilderConfig{});
  EXPECT_EQ(count_nodes(plain, LayerType::kUNARY), 0);
  EXPECT_TRUE(report_has(plain, "folding", "computed at build time"));
  const Plan refit = Builder().build(make(w), config_with({BuilderFlag::kREFIT}));
  EXPECT_EQ(count_nodes(refit, LayerType::kUNARY), 1);
  EXPECT_TRUE(report_has(refit, "given_up", "constant folding"));
  HostTensor x = examples::random_tensor({3}, 6);
  auto a = Engine::create(Plan::from_memory(plain.serialize()));
  auto b = Engine::create(Plan::from_memory(refit.serialize()));
  EXPECT_TRUE(bit_equal(run(*a, "x", x, "y"), run(*b, "x", x, "y")));
}

TEST(Builder, CastsWeightsToFp16AndBf16) {
  const auto c = example_cases()[0];
  const HostTensor x = c.make_input();
  auto ref = build_engine(c.network(c.weights(1)), BuilderConfig{});
  const HostTensor want = run(*ref, c.input, x, c.output);
  for (BuilderFlag f : {BuilderFlag::kFP16, BuilderFlag::kBF16}) {
    const Plan p = Builder().build(c.network(c.weights(1)), config_with({f, BuilderFlag::kREFIT}));
    const DataType dt = f == BuilderFlag::kFP16 ? DataType::kHALF : DataType::kBF16;
    int cast = 0;
    for (const Slot& s : p.metadata().slots) cast += s.desc.dtype == dt;
    EXPECT_GT(cast, 0);
    auto e = Engine::create(Plan::from_memory(p.serialize()));
    const HostTensor got = run(*e, c.input, x, c.output);
    const float tol = f == BuilderFlag::kFP16 ? 2e-2f : 8e-2f;
    for (int64_t i = 0; i < want.count(); ++i)
      ASSERT_NEAR(got.data_as<float>()[i], want.data_as<float>()[i], tol) << i;
  }
}

TEST(Builder, InvalidNetworkErrorNamesTheLayer) {
  Network net;
  Tensor* x = net.add_input("x", DataType::kFLOAT, {2, 3});
  Layer* r = net.add_reshape(x, {3, 2});
  r->output(0)->set_name("y");
  net.mark_output(r->output(0));
  std::get<ReshapeParams>(r->params()).shape = {4, 2};  // edited after add: now wrong
  try {
    Builder().build(net, BuilderConfig{});
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kINVALID_NETWORK);
    EXPECT_NE(std::string(e.what()).find(r->name()), std::string::npos) << e.what();
  }
  Network empty;
  empty.add_input("x", DataType::kFLOAT, {2});
  expect_error(ErrorCode::kINVALID_NETWORK, [&] { Builder().build(empty, BuilderConfig{}); });
}

TEST(Builder, DebugTensorsStayReadable) {
  const auto c = example_cases()[0];
  auto e = build_engine(c.network(c.weights(1)), config_with({BuilderFlag::kREFIT}));
  auto ctx = e->create_execution_context();
  const HostTensor x = c.make_input();
  ctx->set_input(c.input, x.view());
  ctx->execute();
  ASSERT_EQ(ctx->debug_tensor_names(), std::vector<std::string>{"layers.0.act"});
  const Weights act = ctx->debug_tensor("layers.0.act");
  EXPECT_EQ(act.shape, (Dims{3, test_mlp_config().hidden}));
  expect_error(ErrorCode::kNOT_FOUND, [&] { ctx->debug_tensor("y"); });
}

}  // namespace
}  // namespace bindery::testing

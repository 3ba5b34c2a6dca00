// The Refitter's contract: TensorRT's IRefitter semantics, all-or-nothing, named errors
// (acceptance c, d, e, i) and partial refit of fused slots.

#include <algorithm>

#include "bindery/refitter.h"
#include "common/engine_util.h"
#include "core/half.h"

namespace bindery::testing {
namespace {

using examples::WeightMap;

struct Fixture {
  ExampleCase c;
  WeightMap a, b;
  HostTensor x;
  std::unique_ptr<Engine> engine;
  HostTensor out;
  Fixture(int which, BuilderConfig cfg)
      : c(example_cases()[which]), a(c.weights(1)), b(c.weights(2)), x(c.make_input()) {
    engine = build_engine(c.network(a), cfg);
    out = run(*engine, c.input, x, c.output);
  }
  HostTensor now() { return run(*engine, c.input, x, c.output); }
};
constexpr int kMlp = 0, kCnn = 1;

TEST(Refitter, RefitIndividualKeepsConvGeluFusedWhileMarkedWeightsRefit) {
  ExampleCase c = example_cases()[kCnn];
  const WeightMap a = c.weights(1), b = c.weights(2);
  Network net = c.network(a);
  ASSERT_TRUE(net.mark_weights_refittable("conv1.weight"));
  ASSERT_TRUE(net.mark_weights_refittable("conv1.bias"));
  const auto cfg = config_with({BuilderFlag::kREFIT_INDIVIDUAL});
  auto engine = Engine::create(Builder().build(net, cfg));
  bool fused = false;
  for (const GraphNode& n : engine->metadata().graph.nodes)
    if (n.type == LayerType::kCONVOLUTION)
      for (const auto& e : std::get<ConvParams>(n.params).epilogue)
        fused |= e.is_unary && e.unary == UnaryOp::kGELU_ERF;
  EXPECT_TRUE(fused) << "conv1 + gelu should stay fused under REFIT_INDIVIDUAL";
  for (const GraphNode& n : engine->metadata().graph.nodes)
    EXPECT_NE(n.type, LayerType::kUNARY) << n.name;

  Refitter r(*engine);
  auto all = r.all_weights();
  std::sort(all.begin(), all.end());
  EXPECT_EQ(all, (std::vector<std::string>{"conv1.bias", "conv1.weight"}));
  expect_error(ErrorCode::kNOT_REFITTABLE,
               [&] { r.set_named_weights("bn2.weight", b.at("bn2.weight").view()); });
  r.set_named_weights("conv1.weight", b.at("conv1.weight").view());
  r.set_named_weights("conv1.bias", b.at("conv1.bias").view());
  r.refit();
  WeightMap mixed = c.weights(1);
  mixed["conv1.weight"] = HostTensor::copy_of(b.at("conv1.weight").view());
  mixed["conv1.bias"] = HostTensor::copy_of(b.at("conv1.bias").view());
  Network expected_net = c.network(mixed);
  expected_net.mark_weights_refittable("conv1.weight");
  expected_net.mark_weights_refittable("conv1.bias");
  auto expected = build_engine(expected_net, cfg);
  const HostTensor x = c.make_input();
  EXPECT_TRUE(bit_equal(run(*engine, c.input, x, c.output), run(*expected, c.input, x, c.output)));
}

TEST(Refitter, RefitIdenticalAcceptsSameDataAndRefusesChangedData) {
  Fixture f(kMlp, config_with({BuilderFlag::kREFIT_IDENTICAL}));
  Refitter r(*f.engine);
  const std::string name = "layers.0.down.weight";
  r.set_named_weights(name, f.a.at(name).view());  // identical: accepted
  try {
    r.set_named_weights(name, f.b.at(name).view());
    ADD_FAILURE() << "changed data accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kIDENTICAL_MISMATCH);
    EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
  }
  r.refit();
  EXPECT_TRUE(bit_equal(f.now(), f.out));
}

TEST(Refitter, EachBadInputHasItsOwnCodeAndChangesNothing) {
  Fixture f(kMlp, config_with({BuilderFlag::kREFIT}));
  const auto sums = slot_checksums(*f.engine);
  Refitter r(*f.engine);
  const std::string name = "layers.0.down.weight";  // f32[24, 40]
  const HostTensor& good = f.b.at(name);
  expect_error(ErrorCode::kNOT_FOUND,
               [&] { r.set_named_weights("layers.0.dwn.weight", good.view()); });
  HostTensor transposed = HostTensor::copy_of(good.view());
  transposed.reshape({40, 24});
  expect_error(ErrorCode::kSHAPE_MISMATCH, [&] { r.set_named_weights(name, transposed.view()); });
  HostTensor halves(DataType::kHALF, {24, 40});
  expect_error(ErrorCode::kDTYPE_MISMATCH, [&] { r.set_named_weights(name, halves.view()); });
  HostTensor shorter(DataType::kFLOAT, {24, 39});
  expect_error(ErrorCode::kCOUNT_MISMATCH, [&] { r.set_named_weights(name, shorter.view()); });
  EXPECT_TRUE(r.missing_weights().empty());  // nothing was accepted
  r.refit();                                 // a no-op refit
  EXPECT_EQ(slot_checksums(*f.engine), sums);
  EXPECT_TRUE(bit_equal(f.now(), f.out));
}

TEST(Refitter, MissingWeightFailsRefitAndLeavesEngineBitForBit) {
  Fixture f(kCnn, config_with({BuilderFlag::kREFIT}));
  const auto sums = slot_checksums(*f.engine);
  Refitter r(*f.engine);
  // bn2 is folded into conv2: its scale alone cannot be replayed.
  r.set_named_weights("bn2.weight", f.b.at("bn2.weight").view());
  r.set_named_weights("fc.bias", f.b.at("fc.bias").view());
  const auto missing = r.missing_weights();
  EXPECT_EQ(missing, (std::vector<std::string>{"bn2.bias", "bn2.running_mean", "bn2.running_var",
                                               "conv2.weight"}));
  expect_error(ErrorCode::kMISSING_WEIGHTS, [&] { r.refit(); });
  EXPECT_EQ(slot_checksums(*f.engine), sums);
  EXPECT_EQ(f.engine->weights_version(), 0u);
  EXPECT_TRUE(bit_equal(f.now(), f.out));
  for (const auto& n : missing) r.set_named_weights(n, f.b.at(n).view());
  r.refit();
  EXPECT_FALSE(bit_equal(f.now(), f.out));
}

TEST(Refitter, FusedSlotRefitsFromOnlyOneOfItsSources) {
  Fixture f(kMlp, config_with({BuilderFlag::kREFIT}));
  // gate and up share x: fused into one slot by a concat recipe.
  bool fused = false;
  for (const Slot& s : f.engine->metadata().slots) fused |= s.recipe.sources.size() == 2;
  ASSERT_TRUE(fused);
  Refitter r(*f.engine);
  r.set_named_weights("layers.0.gate.weight", f.b.at("layers.0.gate.weight").view());
  EXPECT_TRUE(r.missing_weights().empty());
  r.refit();
  EXPECT_EQ(r.last_refit_slots(), 1);
  WeightMap mixed = f.c.weights(1);
  mixed["layers.0.gate.weight"] = HostTensor::copy_of(f.b.at("layers.0.gate.weight").view());
  auto expected = build_engine(f.c.network(mixed), config_with({BuilderFlag::kREFIT}));
  EXPECT_TRUE(bit_equal(f.now(), run(*expected, f.c.input, f.x, f.c.output)));
}

TEST(Refitter, GetNamedWeightsReturnsNewSourcesThroughIdentityConcatAndCast) {
  for (const bool fp16 : {false, true}) {
    BuilderConfig cfg = config_with({BuilderFlag::kREFIT});
    if (fp16) cfg.set_flag(BuilderFlag::kFP16);
    Fixture f(kMlp, cfg);
    Refitter r(*f.engine);
    for (const auto& [name, w] : f.b) r.set_named_weights(name, w.view());
    r.refit();
    for (const std::string name : {"layers.0.down.bias", "layers.0.gate.weight",
                                   "layers.1.up.weight", "layers.1.down.weight"}) {
      const HostTensor got = r.get_named_weights(name);
      const HostTensor& want = f.b.at(name);
      ASSERT_EQ(got.shape(), want.shape()) << name;
      ASSERT_EQ(got.dtype(), DataType::kFLOAT) << name;
      for (int64_t i = 0; i < want.count(); ++i) {
        const float w = want.data_as<float>()[i];
        // Under FP16 the slot holds f16: reading back gives B rounded through half precision.
        const float through_half = f16_to_f32(f32_to_f16(w));
        const float g = got.data_as<float>()[i];
        ASSERT_TRUE(g == w || (fp16 && g == through_half))
            << name << "[" << i << "] " << g << " vs " << w;
      }
    }
  }
}

TEST(Refitter, GetNamedWeightsOfFoldedBatchNormSaysWhy) {
  Fixture f(kCnn, config_with({BuilderFlag::kREFIT}));
  Refitter r(*f.engine);
  expect_error(ErrorCode::kNOT_INVERTIBLE, [&] { r.get_named_weights("bn2.running_var"); });
  const HostTensor fc = r.get_named_weights("fc.weight");
  EXPECT_TRUE(bit_equal(fc, HostTensor::copy_of(f.a.at("fc.weight").view())));
}

TEST(Refitter, PlainBuildHasNothingToRefit) {
  Fixture f(kMlp, BuilderConfig{});
  Refitter r(*f.engine);
  EXPECT_TRUE(r.all_weights().empty());
  expect_error(ErrorCode::kNOT_REFITTABLE, [&] {
    r.set_named_weights("layers.0.down.bias", f.b.at("layers.0.down.bias").view());
  });
}

TEST(Refitter, PrototypeAndUnsetFollowTensorRT) {
  Fixture f(kMlp, config_with({BuilderFlag::kREFIT}));
  Refitter r(*f.engine);
  const TensorDesc p = r.weights_prototype("layers.0.down.weight");
  EXPECT_EQ(p.dtype, DataType::kFLOAT);
  EXPECT_EQ(p.dims, (Dims{24, 40}));
  expect_error(ErrorCode::kNOT_FOUND, [&] { r.weights_prototype("nope"); });
  r.set_named_weights("layers.0.down.weight", f.b.at("layers.0.down.weight").view());
  EXPECT_TRUE(r.unset_named_weights("layers.0.down.weight"));
  EXPECT_FALSE(r.unset_named_weights("layers.0.down.weight"));
  r.refit();
  EXPECT_TRUE(bit_equal(f.now(), f.out));
}

TEST(Refitter, RefitAsyncIsOrderedOnTheStream) {
  Fixture f(kMlp, config_with({BuilderFlag::kREFIT}));
  auto stream = Stream::create();
  auto ctx_old = f.engine->create_execution_context();
  auto ctx_new = f.engine->create_execution_context();
  ctx_old->set_input(f.c.input, f.x.view());
  ctx_new->set_input(f.c.input, f.x.view());
  ctx_old->enqueue(*stream);
  Refitter r(*f.engine);
  for (const auto& [name, w] : f.b) r.set_named_weights(name, w.view());
  r.refit_async(*stream);
  ctx_new->enqueue(*stream);
  stream->synchronize();
  EXPECT_TRUE(bit_equal(HostTensor::copy_of(ctx_old->output(f.c.output)), f.out));
  auto expected = build_engine(f.c.network(f.b), config_with({BuilderFlag::kREFIT}));
  EXPECT_TRUE(bit_equal(HostTensor::copy_of(ctx_new->output(f.c.output)),
                        run(*expected, f.c.input, f.x, f.c.output)));
  EXPECT_EQ(f.engine->weights_version(), 1u);
}

}  // namespace
}  // namespace bindery::testing

namespace bindery::testing {
namespace {

// Weights stored [K, N] (no transpose) fuse along axis 1: each part is a strided block.
Network column_pair(const examples::WeightMap& w) {
  Network net;
  Tensor* x = net.add_input("x", DataType::kFLOAT, {kDYNAMIC, 8});
  Tensor* a = net.add_matmul(x, false, net.add_constant(w.at("a").view(), "a")->output(0), false)
                  ->output(0);
  Tensor* b = net.add_matmul(x, false, net.add_constant(w.at("b").view(), "b")->output(0), false)
                  ->output(0);
  Tensor* parts[] = {a, b};
  Tensor* y = net.add_concat(parts, 1)->output(0);
  y->set_name("y");
  net.mark_output(y);
  return net;
}

TEST(Refitter, ColumnFusedSlotRefitsEachPartBitExact) {
  const auto weights = [](uint32_t s) {
    examples::WeightMap w;
    w["a"] = examples::random_tensor({8, 5}, s * 10 + 1);
    w["b"] = examples::random_tensor({8, 7}, s * 10 + 2);
    return w;
  };
  const auto cfg = config_with({BuilderFlag::kREFIT});
  const auto a = weights(1), b = weights(2);
  auto engine = build_engine(column_pair(a), cfg);
  ASSERT_EQ(engine->metadata().slots.size(), 1u);
  EXPECT_EQ(engine->metadata().slots[0].recipe.steps.back().axis, 1);
  const HostTensor x = examples::random_tensor({3, 8}, 5);
  Refitter r(*engine);
  r.set_named_weights("b", b.at("b").view());  // only the second, strided part
  r.refit();
  examples::WeightMap mixed = weights(1);
  mixed["b"] = HostTensor::copy_of(b.at("b").view());
  EXPECT_TRUE(bit_equal(run(*engine, "x", x, "y"),
                        run(*build_engine(column_pair(mixed), cfg), "x", x, "y")));
  r.set_named_weights("a", b.at("a").view());
  r.set_named_weights("b", b.at("b").view());
  r.refit();
  EXPECT_TRUE(
      bit_equal(run(*engine, "x", x, "y"), run(*build_engine(column_pair(b), cfg), "x", x, "y")));
  EXPECT_TRUE(bit_equal(r.get_named_weights("a"), HostTensor::copy_of(b.at("a").view())));
}

}  // namespace
}  // namespace bindery::testing

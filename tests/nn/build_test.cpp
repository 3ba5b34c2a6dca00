// A module tree emitted, built and run: the plan's source weights carry the parameters' dotted
// names and refittable flags, and the engine computes y = relu(x·W1ᵀ + b1)·W2ᵀ + b2.

#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <vector>

#include "bindery/builder.h"
#include "bindery/engine.h"
#include "bindery/nn/emitter.h"
#include "bindery/nn/layers.h"
#include "bindery/nn/module.h"
#include "nn/mlp_module.h"

namespace bindery::nn {
namespace {

using testing::Mlp;

// Deterministic small values, different per parameter.
std::vector<float> ramp(int64_t n, float scale, float offset) {
  std::vector<float> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = scale * static_cast<float>((i * 7) % 11 - 5) + offset;
  return v;
}

// The definition of Linear (PyTorch's F.linear), written out: y[r][o] = b[o] + Σ x[r][i]·W[o][i].
std::vector<float> linear_ref(const std::vector<float>& x, int64_t rows, int64_t in,
                              const std::vector<float>& w, const std::vector<float>& b,
                              int64_t out) {
  std::vector<float> y(rows * out);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < out; ++o) {
      double acc = b[o];
      for (int64_t i = 0; i < in; ++i) acc += double(x[r * in + i]) * w[o * in + i];
      y[r * out + o] = static_cast<float>(acc);
    }
  return y;
}

TEST(NnBuild, MlpBuildsWithDottedSourceNamesAndRuns) {
  const int64_t d = 4, h = 6, rows = 3;
  Mlp mlp(d, h);
  std::vector<float> w1 = ramp(h * d, 0.1f, 0.0f), b1 = ramp(h, 0.05f, 0.1f);
  std::vector<float> w2 = ramp(d * h, -0.2f, 0.01f), b2 = ramp(d, 0.3f, 0.0f);
  std::map<std::string, Weights> state{
      {"fc1.weight", Weights(DataType::kFLOAT, {h, d}, w1.data())},
      {"fc1.bias", Weights(DataType::kFLOAT, {h}, b1.data())},
      {"fc2.weight", Weights(DataType::kFLOAT, {d, h}, w2.data())},
      {"fc2.bias", Weights(DataType::kFLOAT, {d}, b2.data())},
  };
  mlp.load_state(state);
  mlp.fc1->set_refittable(false);

  Network net;
  Emitter em(net);
  Tensor* y = mlp.forward(em, net.add_input("x", DataType::kFLOAT, {kDYNAMIC, d}));
  y->set_name("y");
  net.mark_output(y);

  BuilderConfig cfg;
  cfg.set_flag(BuilderFlag::kREFIT_INDIVIDUAL);
  Plan plan = Builder().build(net, cfg);
  const PlanMetadata& meta = plan.metadata();
  for (const char* name : {"fc2.weight", "fc2.bias"}) {
    const int i = meta.find_source(name);
    ASSERT_GE(i, 0) << name;
    EXPECT_TRUE(meta.sources[i].refittable) << name;
  }
  for (const char* name : {"fc1.weight", "fc1.bias"}) {
    const int i = meta.find_source(name);
    if (i >= 0) EXPECT_FALSE(meta.sources[i].refittable) << name;
  }

  auto engine = Engine::create(std::move(plan));
  auto ctx = engine->create_execution_context();
  std::vector<float> x = ramp(rows * d, 0.5f, 0.2f);
  ctx->set_input("x", Weights(DataType::kFLOAT, {rows, d}, x.data()));
  ctx->execute();
  Weights out = ctx->output("y");
  ASSERT_EQ(out.shape, (Dims{rows, d}));

  std::vector<float> hidden = linear_ref(x, rows, d, w1, b1, h);
  for (float& v : hidden) v = std::max(v, 0.0f);
  std::vector<float> want = linear_ref(hidden, rows, h, w2, b2, d);
  for (int64_t i = 0; i < rows * d; ++i) EXPECT_NEAR(out.data<float>()[i], want[i], 1e-5f) << i;
}

}  // namespace
}  // namespace bindery::nn

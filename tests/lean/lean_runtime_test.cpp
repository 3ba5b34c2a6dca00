// Links only bindery_runtime (no builder, no models): loads a plan the CLI wrote and runs it,
// then refits it from what the engine reports about itself — what a deployment does.

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "bindery/engine.h"
#include "bindery/error.h"
#include "bindery/refitter.h"

namespace bindery {
namespace {

TEST(LeanRuntime, LoadsAPlanAndRunsIt) {
  auto engine = Engine::load(BINDERY_LEAN_PLAN);
  ASSERT_EQ(engine->inputs().size(), 1u);
  const TensorInfo in = engine->inputs()[0];
  ASSERT_EQ(in.desc.dims.size(), 2u);
  const int64_t batch = 3, width = in.desc.dims[1];
  HostTensor x(DataType::kFLOAT, {batch, width});
  for (int64_t i = 0; i < x.count(); ++i)
    x.data_as<float>()[i] = std::sin(0.1f * static_cast<float>(i));
  auto ctx = engine->create_execution_context();
  ctx->set_input(in.name, x.view());
  ctx->execute();
  const Weights y = ctx->output(engine->outputs()[0].name);
  ASSERT_EQ(y.shape[0], batch);
  double sum = 0;
  for (int64_t i = 0; i < y.count(); ++i) {
    ASSERT_TRUE(std::isfinite(y.data<float>()[i]));
    sum += std::fabs(y.data<float>()[i]);
  }
  EXPECT_GT(sum, 0.0);
  const HostTensor before = HostTensor::copy_of(y);

  // Refit every weight with what the engine reads back: outputs must not move.
  Refitter r(*engine);
  std::vector<HostTensor> values;
  for (const auto& name : r.all_weights()) values.push_back(r.get_named_weights(name));
  const auto names = r.all_weights();
  for (size_t i = 0; i < names.size(); ++i) r.set_named_weights(names[i], values[i].view());
  r.refit();
  ctx->execute();
  const Weights again = ctx->output(engine->outputs()[0].name);
  EXPECT_EQ(std::memcmp(before.data(), again.values, before.size_bytes()), 0);
  EXPECT_EQ(engine->weights_version(), 1u);
}

TEST(LeanRuntime, RefusesAMissingPlanFile) {
  try {
    Engine::load("/nonexistent/plan.bin");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kIO);
  }
}

}  // namespace
}  // namespace bindery

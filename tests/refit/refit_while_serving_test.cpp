// Refit while serving: one thread runs an engine over and over while another refits it back
// and forth between two checkpoints. Every run must give exactly the logits of the version it
// reports (even: the weights it was built with, odd: the other checkpoint's), never a mix.
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <thread>

#include "bindery/engine.h"
#include "bindery/models/generation.h"
#include "bindery/models/llama.h"

namespace bindery::models {
namespace {

const std::filesystem::path kLLAMA =
    std::filesystem::path(BINDERY_SOURCE_DIR) / "tests/fixtures/llama";

TEST(RefitWhileServing, EveryRunSeesOneWeightsVersion) {
  const std::string a = (kLLAMA / "llama_gqa").string(), b = (kLLAMA / "llama_gqa_b").string();
  auto engine = Engine::create(build_llama(a, {.refit = true}));
  std::vector<int32_t> ids = {1, 5, 9, 23, 42, 7, 100, 3}, pos(ids.size()), seq(ids.size(), 0);
  for (size_t i = 0; i < pos.size(); ++i) pos[i] = static_cast<int32_t>(i);
  const auto n = static_cast<int64_t>(ids.size());
  const auto run = [&](ExecutionContext& ctx) {
    ctx.reset_kv_cache();
    ctx.set_input("input_ids", Weights(DataType::kINT32, {n}, ids.data()));
    ctx.set_input("positions", Weights(DataType::kINT32, {n}, pos.data()));
    ctx.set_input("seq_ids", Weights(DataType::kINT32, {n}, seq.data()));
    ctx.set_input("logit_rows", Weights(DataType::kINT32, {n}, pos.data()));
    ctx.execute();
    return HostTensor::copy_of(ctx.output("logits"));
  };
  const HostTensor with_a = run(*engine->create_execution_context());
  const HostTensor with_b = run(*Engine::create(build_llama(b))->create_execution_context());
  ASSERT_NE(std::memcmp(with_a.data(), with_b.data(), with_a.size_bytes()), 0);

  std::atomic<bool> done{false};
  std::thread refits([&] {
    for (int i = 0; i < 40; ++i) refit_from_hf_checkpoint(*engine, i % 2 == 0 ? b : a);
    done = true;
  });
  auto ctx = engine->create_execution_context();
  int runs = 0, mixed = 0, versions_seen = 0;
  uint64_t last_version = ~uint64_t{0};
  while (!done || runs == 0) {
    const HostTensor logits = run(*ctx);
    const uint64_t v = ctx->last_run_weights_version();
    const HostTensor& expected = v % 2 == 0 ? with_a : with_b;
    mixed += std::memcmp(logits.data(), expected.data(), expected.size_bytes()) != 0;
    versions_seen += v != last_version;
    last_version = v;
    ++runs;
  }
  refits.join();
  EXPECT_EQ(mixed, 0) << "of " << runs << " runs";
  EXPECT_GT(versions_seen, 1) << "the runs never overlapped the refits";
  EXPECT_EQ(engine->weights_version(), 40u);
}

}  // namespace
}  // namespace bindery::models

// Writes the seed corpus of tests/fuzz/plan_load_fuzzer.cpp: small valid plans of every kind
// and damaged variants of them. Disabled; run it when the plan format changes:
//   test_plan --gtest_also_run_disabled_tests --gtest_filter='PlanFuzzCorpus.*'
// (BINDERY_FUZZ_CORPUS_DIR overrides the destination, tests/fuzz/corpus/plan_load.)

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "plan_test_util.h"

namespace bindery {
namespace {

using namespace plan_test;

// The smallest refittable plan: one input, one weight, one matmul.
Plan tiny_plan() {
  PlanMetadata m;
  m.flags.set(BuilderFlag::kREFIT_IDENTICAL);
  m.sources.push_back({"w", {DataType::kFLOAT, {2, 2}}, true, 0x1234ull});
  m.slots.push_back(make_slot("w", DataType::kFLOAT, {2, 2}, 0, true, Recipe{{"w"}, {step(RecipeOp::kSOURCE, {0})}}));
  m.blob_size = 16;
  m.graph.tensors = {{"x", {DataType::kFLOAT, {-1, 2}}, TensorKind::kINPUT},
                     {"w", {DataType::kFLOAT, {2, 2}}, TensorKind::kWEIGHT, 0},
                     {"y", {DataType::kFLOAT, {-1, 2}}, TensorKind::kACTIVATION, -1, true}};
  m.graph.nodes.push_back({"mm", LayerType::kMATMUL, MatMulParams{}, {0, 1}, {2}});
  m.graph.inputs = {0};
  m.graph.outputs = {2};
  HostTensor blob = sample_blob(m);
  return Plan(std::move(m), std::move(blob));
}

TEST(PlanFuzzCorpus, DISABLED_WriteSeedCorpus) {
  const char* env = std::getenv("BINDERY_FUZZ_CORPUS_DIR");
  const std::filesystem::path dir =
      env ? std::filesystem::path(env)
          : std::filesystem::path(BINDERY_SOURCE_DIR) / "tests/fuzz/corpus/plan_load";
  std::filesystem::create_directories(dir);
  const auto write = [&](const std::string& name, const Bytes& b) {
    std::ofstream(dir / name, std::ios::binary)
        .write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  };
  const Plan sample = sample_plan();
  const Bytes full = sample.serialize();
  write("seed-sample-full", full);
  write("seed-sample-stripped", sample.serialize({.exclude_weights = true}));
  write("seed-sample-frozen", sample.serialize({.include_refit = false}));
  write("seed-tiny-full", tiny_plan().serialize());
  write("seed-tiny-stripped", tiny_plan().serialize({.exclude_weights = true}));
  write("seed-empty-plan", Plan().serialize());
  // Damaged: each reaches a different check.
  write("seed-truncated-header", prefix(full, 40));
  write("seed-truncated-blob", prefix(full, full.size() - 100));
  write("seed-flipped-metadata", flip(full, 200));
  Bytes newer = full;
  put32(newer, 8, 2);
  fix_checksums(newer);
  write("seed-newer-version", newer);
  write("seed-bad-json", with_metadata(full, "{\"flags\": 17, \"graph\": [}"));
  write("seed-bad-index",
        edit_json(full, [](json& j) { j["graph"]["nodes"][3]["inputs"][0] = 99; }));
  write("seed-png", to_bytes(std::string_view("\x89PNG\r\n\x1a\n\0\0\0\rIHDR", 16)));
}

}  // namespace
}  // namespace bindery

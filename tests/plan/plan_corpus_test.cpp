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

// A small refittable plan: input x, weight w (slot 0, refittable) and b (slot 1, baked), and
// one node per layer, each taking the previous output and the weights. Seeds stay small (about
// 1-2 KB) so that the inputs the fuzzer derives from them, and the corpus, stay small too.
Plan small_plan(const std::vector<std::pair<LayerType, LayerParams>>& layers,
                uint32_t flags = 1u << 1) {
  PlanMetadata m;
  m.flags.bits = flags;
  m.sources.push_back({"w", {DataType::kFLOAT, {2, 2}}, true, 0x1234ull});
  m.sources.push_back({"b", {DataType::kHALF, {2}}, false, std::nullopt});
  m.slots.push_back(make_slot("w", DataType::kFLOAT, {2, 2}, 0, true,
                              Recipe{{"w"}, {step(RecipeOp::kSOURCE, {0})}}));
  m.slots.push_back(make_slot("b", DataType::kHALF, {2}, 256, false, {}));
  m.blob_size = 260;
  m.graph.tensors = {{"x", {DataType::kFLOAT, {-1, 2}}, TensorKind::kINPUT},
                     {"w", {DataType::kFLOAT, {2, 2}}, TensorKind::kWEIGHT, 0},
                     {"b", {DataType::kHALF, {2}}, TensorKind::kWEIGHT, 1}};
  int prev = 0;
  for (const auto& [type, params] : layers) {
    const int out = static_cast<int>(m.graph.tensors.size());
    const std::string id = std::to_string(out);  // (not "t" + ...: GCC 12 -Wrestrict bug)
    m.graph.tensors.push_back({std::string("t").append(id), {DataType::kFLOAT, {-1, 2}}});
    m.graph.nodes.push_back({std::string("n").append(id), type, params, {prev, 1, 2}, {out}});
    prev = out;
  }
  m.graph.tensors[static_cast<size_t>(prev)].is_output = true;
  m.graph.inputs = {0};
  m.graph.outputs = {prev};
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
  // Between them the seeds use every layer type, every params alternative and plan kind.
  const Plan tiny = small_plan({{LayerType::kMATMUL, MatMulParams{false, true}}});
  ConvParams conv;
  conv.epilogue = {{false, UnaryOp::kRELU, ElementwiseOp::kMIN, {6.f, -0.5f}},
                   {true, UnaryOp::kSILU, ElementwiseOp::kMAX, {}}};
  const Plan vision = small_plan({{LayerType::kCONVOLUTION, conv},
                                  {LayerType::kBATCHNORM, BatchNormParams{1e-3f}},
                                  {LayerType::kPOOLING, PoolingParams{}}});
  const Plan text = small_plan({{LayerType::kCONSTANT, ConstantParams{"w"}},
                                {LayerType::kGATHER, GatherParams{0}},
                                {LayerType::kRMSNORM, NormParams{1e-6f}},
                                {LayerType::kLAYERNORM, NormParams{}},
                                {LayerType::kELEMENTWISE, ElementwiseParams{ElementwiseOp::kDIV}},
                                {LayerType::kUNARY, UnaryParams{UnaryOp::kGELU_ERF}},
                                {LayerType::kSOFTMAX, SoftmaxParams{-1}}},
                               (1u << 0) | (1u << 5));
  const Plan shapes = small_plan({{LayerType::kREDUCE, ReduceParams{ReduceOp::kMAX, {1}, true}},
                                  {LayerType::kRESHAPE, ReshapeParams{{0, -1}}},
                                  {LayerType::kTRANSPOSE, TransposeParams{{1, 0}}},
                                  {LayerType::kCONCAT, ConcatParams{1}},
                                  {LayerType::kSLICE, SliceParams{{0, 0}, {1, 2}, {}}},
                                  {LayerType::kCAST, CastParams{DataType::kINT4}}});
  const Bytes full = tiny.serialize();
  write("seed-tiny-full", full);
  write("seed-tiny-stripped", tiny.serialize({.exclude_weights = true}));
  write("seed-tiny-frozen", tiny.serialize({.include_refit = false}));
  write("seed-vision", vision.serialize());
  write("seed-text", text.serialize({.exclude_weights = true}));
  write("seed-shapes", shapes.serialize());
  write("seed-empty-plan", Plan().serialize());
  // Damaged: each reaches a different check.
  write("seed-truncated-header", prefix(full, 40));
  write("seed-truncated-blob", prefix(full, full.size() - 100));
  write("seed-flipped-metadata", flip(full, 200));
  Bytes newer = full;
  put32(newer, 8, 2);
  fix_checksums(newer);
  write("seed-newer-version", newer);
  write("seed-bad-json", with_metadata(full, "{\"flags\": 2, \"graph\": [}"));
  write("seed-bad-index",
        edit_json(full, [](json& j) { j["graph"]["nodes"][0]["inputs"][0] = 99; }));
  write("seed-png", to_bytes(std::string_view("\x89PNG\r\n\x1a\n\0\0\0\rIHDR", 16)));
}

// The committed fuzz corpus replayed in every build, not only the clang one: each input loads
// (and serializes again) or fails with a bindery::Error, also with its checksums recomputed.
TEST(PlanFuzzCorpus, EveryInputLoadsOrFailsWithAnError) {
  const std::filesystem::path dir =
      std::filesystem::path(BINDERY_SOURCE_DIR) / "tests/fuzz/corpus/plan_load";
  if (!std::filesystem::exists(dir)) GTEST_SKIP() << dir << " does not exist";
  int inputs = 0, loaded = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    std::ifstream in(entry.path(), std::ios::binary);
    Bytes bytes = to_bytes(std::string(std::istreambuf_iterator<char>(in), {}));
    for (int attempt = 0; attempt < 2; ++attempt) {
      try {
        const Plan plan = Plan::from_memory(bytes);
        EXPECT_NO_THROW(Plan::from_memory(plan.serialize())) << entry.path();
        ++loaded;
        break;
      } catch (const Error& e) {
        if (e.code() != ErrorCode::kCHECKSUM_MISMATCH || attempt == 1) break;
        fix_checksums(bytes);
      }
    }
    ++inputs;
  }
  EXPECT_GT(inputs, 0);
  EXPECT_GT(loaded, 0);
}

}  // namespace
}  // namespace bindery

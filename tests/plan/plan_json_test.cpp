// Plan metadata as JSON: the round trip of every field, and one named kCORRUPT_FILE for each
// kind of invalid content, carried in files whose checksums are valid.

#include "plan/plan_json.h"

#include <gtest/gtest.h>

#include <set>

#include "plan_test_util.h"

namespace bindery {
namespace {

using namespace plan_test;

static_assert(std::variant_size_v<LayerParams> == 21,
              "a new LayerParams alternative needs a node in sample_metadata()");

TEST(BuilderFlags, ToStringNamesEachBit) {
  BuilderFlags f;
  EXPECT_EQ(f.to_string(), "none");
  f.set(BuilderFlag::kREFIT);
  f.set(BuilderFlag::kSTRIP_PLAN);
  EXPECT_EQ(f.to_string(), "REFIT|STRIP_PLAN");
  f.bits = 0x3f;
  EXPECT_EQ(f.to_string(), "REFIT|REFIT_INDIVIDUAL|REFIT_IDENTICAL|STRIP_PLAN|FP16|BF16");
  EXPECT_EQ(BuilderFlags{1u << 9}.to_string(), "BIT9");
}

TEST(PlanJson, RoundTripsEveryField) {
  const PlanMetadata m = sample_metadata();
  const std::string text = plan_json::to_text(m);
  const PlanMetadata back = plan_json::from_text(text);
  expect_same_metadata(m, back);
  EXPECT_EQ(plan_json::to_text(back), text);  // deterministic
  EXPECT_NO_THROW(plan_json::validate(back, back.blob_size));
}

TEST(PlanJson, CoversEveryLayerTypeAndRecipeOp) {
  const PlanMetadata m = sample_metadata();
  std::set<LayerType> types;
  std::set<size_t> alternatives;
  for (const GraphNode& n : m.graph.nodes)
    types.insert(n.type), alternatives.insert(n.params.index());
  EXPECT_EQ(types.size(), 23u);
  EXPECT_EQ(alternatives.size(), std::variant_size_v<LayerParams>);
  std::set<RecipeOp> ops;
  for (const Slot& s : m.slots)
    for (const RecipeStep& st : s.recipe.steps) ops.insert(st.op);
  EXPECT_EQ(ops.size(), 8u);
}

TEST(PlanJson, WritesHashesAsHexStrings) {
  const json j = plan_json::to_json(sample_metadata());
  EXPECT_EQ(j["sources"][0]["identical_hash"], "0x0123456789abcdef");
  EXPECT_TRUE(j["sources"][1]["identical_hash"].is_null());
  EXPECT_EQ(j["slots"][0]["checksum"], "0x8000000000000001");
  EXPECT_EQ(j["graph"]["nodes"][14]["type"], "conv2d");
}

TEST(PlanJson, WriterRejectsParamsThatDoNotMatchTheLayerType) {
  PlanMetadata m = sample_metadata();
  m.graph.nodes[1].params = ConcatParams{};
  try {
    plan_json::to_text(m);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kINVALID_ARGUMENT);
    EXPECT_NE(std::string(e.what()).find("graph.nodes[1].params"), std::string::npos) << e.what();
  }
}

// ---- invalid content with valid checksums: each names where it is ----

Bytes sample_image() {
  static const Bytes img = sample_plan().serialize();
  return img;
}

// One line per case: edit the JSON, expect kCORRUPT_FILE whose message contains `needle`.
#define EXPECT_CORRUPT(edit, needle)                                                            \
  EXPECT_LOAD_ERROR(edit_json(sample_image(), [](json& j) { edit; }), ErrorCode::kCORRUPT_FILE, \
                    needle)

TEST(PlanLoad, UnmodifiedSampleLoads) { EXPECT_FALSE(load_error(sample_image()).has_value()); }

TEST(PlanLoad, RejectsMetadataThatIsNotJson) {
  EXPECT_LOAD_ERROR(with_metadata(sample_image(), "{\"flags\": 3,"), ErrorCode::kCORRUPT_FILE,
                    "not valid JSON");
  EXPECT_LOAD_ERROR(with_metadata(sample_image(), ""), ErrorCode::kCORRUPT_FILE, "not valid JSON");
  EXPECT_LOAD_ERROR(with_metadata(sample_image(), "{\"a\": \"\xff\"}"), ErrorCode::kCORRUPT_FILE,
                    "not valid JSON");
  EXPECT_LOAD_ERROR(with_metadata(sample_image(), std::string(100000, '[')),
                    ErrorCode::kCORRUPT_FILE, "not valid JSON");
}

TEST(PlanLoad, RejectsWrongJsonShapes) {
  EXPECT_LOAD_ERROR(with_metadata(sample_image(), "[1, 2]"), ErrorCode::kCORRUPT_FILE,
                    "plan metadata: expected an object, found an array of 2 elements");
  EXPECT_CORRUPT(j.erase("graph"), "plan metadata: graph: missing");
  EXPECT_CORRUPT(j["blob_size"] = "1836", "blob_size: expected an integer");
  EXPECT_CORRUPT(j["blob_size"] = 1836.5, "blob_size: expected an integer");
  EXPECT_CORRUPT(j["stripped"] = 0, "stripped: expected true or false, found 0");
  EXPECT_CORRUPT(j["weights_version"] = -1, "weights_version: expected an unsigned");
  EXPECT_CORRUPT(j["graph"]["nodes"] = json::object(), "graph.nodes: expected an array");
  EXPECT_CORRUPT(j["graph"]["nodes"][2] = 7, "graph.nodes[2]: expected an object, found 7");
  EXPECT_CORRUPT(j["graph"]["tensors"][0]["name"] = nullptr,
                 "graph.tensors[0].name: expected a string");
  EXPECT_CORRUPT(j["graph"]["nodes"][4]["params"]["axis"] = 1ull << 40,
                 "graph.nodes[4].params.axis");
  EXPECT_CORRUPT(j["graph"]["nodes"][6]["params"]["epsilon"] = 1e300,
                 "graph.nodes[6].params.epsilon");
  EXPECT_CORRUPT(j["graph"]["nodes"][6]["params"]["epsilon"] = "tiny", "expected a float");
  EXPECT_CORRUPT(j["graph"]["tensors"][0]["dims"][0] = 18446744073709551615ull,
                 "graph.tensors[0].dims[0]: expected an integer");
  EXPECT_CORRUPT(j["slots"][0]["checksum"] = 12, "slots[0].checksum: expected a 64-bit hash");
  EXPECT_CORRUPT(j["slots"][0]["checksum"] = "0x123", "slots[0].checksum: expected a 64-bit hash");
  EXPECT_CORRUPT(j["sources"][0]["identical_hash"] = "0x0123456789abcdeg",
                 "sources[0].identical_hash");
  EXPECT_CORRUPT(j["report"][0]["weights"][1] = false, "report[0].weights[1]: expected a string");
}

TEST(PlanLoad, RejectsUnknownEnumValues) {
  EXPECT_CORRUPT(j["graph"]["nodes"][3]["type"] = "frobnicate",
                 "graph.nodes[3].type: expected one of constant, matmul");
  EXPECT_CORRUPT(j["graph"]["nodes"][2]["params"]["op"] = "xor", "graph.nodes[2].params.op");
  EXPECT_CORRUPT(j["graph"]["nodes"][3]["params"]["op"] = 3, "graph.nodes[3].params.op");
  EXPECT_CORRUPT(j["graph"]["nodes"][5]["params"]["op"] = "prod", "graph.nodes[5].params.op");
  EXPECT_CORRUPT(j["graph"]["nodes"][16]["params"]["type"] = "min", "graph.nodes[16].params.type");
  EXPECT_CORRUPT(j["graph"]["nodes"][14]["params"]["epilogue"][0]["unary"] = "",
                 "epilogue[0].unary");
  EXPECT_CORRUPT(j["graph"]["tensors"][1]["kind"] = "constant", "graph.tensors[1].kind");
  EXPECT_CORRUPT(j["graph"]["tensors"][1]["dtype"] = "f33",
                 "graph.tensors[1].dtype: expected a dtype");
  EXPECT_CORRUPT(j["graph"]["tensors"][1]["dtype"] = "float32", "graph.tensors[1].dtype");
  EXPECT_CORRUPT(j["slots"][0]["recipe"]["steps"][1]["op"] = "fold", "slots[0].recipe.steps[1].op");
  EXPECT_CORRUPT(j["flags"] = 1 << 12, "flags: the header says REFIT|FP16");
}

TEST(PlanLoad, RejectsParamsOfAnotherLayerType) {
  // A matmul node carrying a softmax's params: its own fields are missing.
  EXPECT_CORRUPT(j["graph"]["nodes"][1]["params"] = json::parse(R"({"axis": 1})"),
                 "graph.nodes[1].params.transpose_a: missing");
}

TEST(PlanLoad, RejectsIndicesOutOfRange) {
  EXPECT_CORRUPT(j["graph"]["nodes"][3]["inputs"][0] = 99,
                 "graph.nodes[3].inputs[0]: expected a tensor index in [-1, 29], found 99");
  EXPECT_CORRUPT(j["graph"]["nodes"][3]["inputs"][0] = -2, "graph.nodes[3].inputs[0]");
  EXPECT_CORRUPT(j["graph"]["nodes"][3]["outputs"][0] = -1,
                 "graph.nodes[3].outputs[0]: expected a tensor index in [0, 29]");
  EXPECT_CORRUPT(j["graph"]["inputs"][0] = 30, "graph.inputs[0]");
  EXPECT_CORRUPT(j["graph"]["outputs"][0] = 1000000, "graph.outputs[0]");
  EXPECT_CORRUPT(j["graph"]["tensors"][5]["slot"] = 6,
                 "graph.tensors[5].slot: expected a slot index in [0, 5], found 6");
  EXPECT_CORRUPT(j["graph"]["tensors"][5]["slot"] = -1, "graph.tensors[5].slot");
  EXPECT_CORRUPT(j["graph"]["tensors"][6]["slot"] = 9, "graph.tensors[6].slot");
  EXPECT_CORRUPT(j["slots"][0]["recipe"]["steps"][2]["args"][1] = 2,
                 "slots[0].recipe.steps[2].args[1]: expected an earlier step in [0, 1], found 2");
  EXPECT_CORRUPT(j["slots"][0]["recipe"]["steps"][0]["args"][0] = 2,
                 "slots[0].recipe.steps[0].args[0]: expected a source index in [0, 1], found 2");
  EXPECT_CORRUPT(j["slots"][0]["recipe"]["steps"][0]["args"] = json::array(),
                 "slots[0].recipe.steps[0].args: expected 1 argument(s), found 0");
  EXPECT_CORRUPT(j["slots"][1]["recipe"]["steps"][3]["args"].push_back(0),
                 "expected 3 argument(s), found 4");
  EXPECT_CORRUPT(j["slots"][0]["recipe"]["sources"][1] = "nope",
                 "slots[0].recipe.sources[1]: source weight 'nope' is not in the plan's sources");
  EXPECT_CORRUPT(j["slots"][0]["recipe"]["sources"][1] = "w.a", "listed twice");
  EXPECT_CORRUPT(j["slots"][0]["recipe"]["steps"] = json::array(),
                 "slots[0].recipe: a refittable slot needs a recipe");
  EXPECT_CORRUPT(j["slots"][3]["recipe"]["steps"][1]["dims"] = json::array({1, 1}),
                 "slots[3].recipe.steps[1].dims[1]: expected a permutation");
  EXPECT_CORRUPT(j["slots"][3]["recipe"]["steps"][2]["dims"] = json::array({0}),
                 "slots[3].recipe.steps[2].dims: expected [start, length]");
  EXPECT_CORRUPT(j["graph"]["nodes"][10]["params"]["perm"][0] = 7,
                 "graph.nodes[10].params.perm[0]");
}

TEST(PlanLoad, RejectsImpossibleSlots) {
  EXPECT_CORRUPT(j["slots"][1]["offset"] = 300, "slots[1].offset: expected a multiple of 256");
  EXPECT_CORRUPT(j["slots"][5]["offset"] = 1792, "slots[5].offset");
  EXPECT_CORRUPT(j["slots"][5]["offset"] = -256, "slots[5].offset");
  EXPECT_CORRUPT(j["slots"][5]["offset"] = 9223372036854775552ll, "slots[5].offset");
  EXPECT_CORRUPT(j["slots"][0]["size_bytes"] = 127,
                 "slots[0].size_bytes: expected 128 for f16[8, 8], found 127");
  EXPECT_CORRUPT(j["slots"][0]["dims"][0] = -1, "slots[0].dims[0]: expected a dimension >= 0");
  EXPECT_CORRUPT(j["slots"][0]["dims"] = json::array({1 << 30, 1 << 30, 1 << 30}),
                 "slots[0].dims: [1073741824, 1073741824, 1073741824] has more than");
  EXPECT_CORRUPT(j["sources"][0]["dims"] = json::array({-1}), "sources[0].dims[0]");
  EXPECT_CORRUPT(j["graph"]["tensors"][6]["dims"][0] = -2,
                 "graph.tensors[6].dims[0]: expected a dimension >= -1");
  EXPECT_CORRUPT(j["slots"][4]["name"] = "qkv", "slots[4].name: slot 'qkv' appears twice");
  EXPECT_CORRUPT(j["sources"][1]["name"] = "w.a",
                 "sources[1].name: source weight 'w.a' appears twice");
  EXPECT_CORRUPT(j["blob_size"] = 1835, "slots[5].offset");
  EXPECT_CORRUPT(j["blob_size"] = 4096, "blob_size: the slots need at most 2048 bytes, found 4096");
  EXPECT_CORRUPT(j["blob_size"] = 2048,
                 "blob_size: the blob needs 2048 bytes of weights section, the file has 1836");
}

TEST(PlanLoad, RejectsInconsistentPlanKinds) {
  EXPECT_CORRUPT(j["refit_info"] = false, "sources: a plan without refit information");
  EXPECT_CORRUPT((j["refit_info"] = false, j["sources"] = json::array()), "slots[0].refittable");
  EXPECT_CORRUPT((j["stripped"] = true, j["refit_info"] = false),
                 "stripped: a stripped plan must keep");
  EXPECT_CORRUPT(j["stripped"] = true,
                 "slots: the non-refittable slots of this stripped plan need 556 bytes");
}

TEST(PlanLoad, RejectsBadParamValues) {
  EXPECT_CORRUPT(j["graph"]["nodes"][14]["params"]["stride"][0] = 0,
                 "graph.nodes[14].params.stride[0]: expected a value > 0");
  EXPECT_CORRUPT(j["graph"]["nodes"][14]["params"]["groups"] = 0, "graph.nodes[14].params.groups");
  EXPECT_CORRUPT(j["graph"]["nodes"][16]["params"]["window"][1] = -3,
                 "graph.nodes[16].params.window[1]");
  EXPECT_CORRUPT(j["graph"]["nodes"][12]["params"]["stride"][1] = 0,
                 "graph.nodes[12].params.stride[1]");
  EXPECT_CORRUPT(j["graph"]["nodes"][12]["params"]["size"].push_back(1),
                 "graph.nodes[12].params: start, size and stride");
  EXPECT_CORRUPT(j["graph"]["nodes"][12]["params"]["size"][0] = -2,
                 "graph.nodes[12].params.size[0]: expected a size >= 0 or -1 (to the end)");
}

TEST(PlanLoad, AcceptsSliceToTheEnd) {
  const Bytes img =
      edit_json(sample_image(), [](json& j) { j["graph"]["nodes"][12]["params"]["size"][0] = -1; });
  EXPECT_EQ(std::get<SliceParams>(Plan::from_memory(img).metadata().graph.nodes[12].params).size,
            dims({-1, 3}));
}

}  // namespace
}  // namespace bindery

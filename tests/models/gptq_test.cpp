// GPTQ int4 checkpoints (tools/make_gptq_fixtures.py: llama_gqa quantized by a reference
// quantizer and packed as AutoGPTQ writes them) against transformers running the dequantized
// float weights. The engine dequantizes (on the fly in kMATMUL_INT4, or at load) exactly as the
// reference does ((q - zero) is exact in f32, then one rounding by the scale), so only the
// order of f32 sums differs: stated
// tolerance 1e-4 on the logits (the float goldens' tolerance; measured on logits up to 7.7:
// packed kMATMUL_INT4 9.5e-6 / 8.1e-6 without / with desc_act, dequantized at load 1.0e-5 /
// 2.0e-5), greedy tokens identical.
#include "models/llama/gptq.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "bindery/engine.h"
#include "bindery/error.h"
#include "bindery/io/checkpoint_reader.h"
#include "bindery/io/safetensors.h"
#include "bindery/models/generation.h"
#include "bindery/models/llama.h"
#include "common/error_util.h"
#include "models/golden_util.h"

namespace bindery::models {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing::error_of;
using testing::max_abs_diff;

const fs::path kLLAMA = fs::path(BINDERY_SOURCE_DIR) / "tests/fixtures/llama";
const std::string kGPTQ = (kLLAMA / "llama_gqa_gptq").string();
const std::string kGPTQ_ACT = (kLLAMA / "llama_gqa_gptq_act").string();

void expect_goldens(Engine& engine, const std::string& dir) {
  const testing::Golden g = testing::load_golden(dir);
  ASSERT_FALSE(g.prompts.empty());
  Generator gen(engine);
  for (size_t i = 0; i < g.prompts.size(); ++i) {
    SCOPED_TRACE("prompt " + std::to_string(i));
    EXPECT_LE(max_abs_diff(gen.logits(g.prompts[i]), g.logits[i]), 1e-4f);
    const int64_t fresh = static_cast<int64_t>(g.greedy[i].size() - g.prompts[i].size());
    EXPECT_EQ(gen.generate({g.prompts[i]}, {.max_new_tokens = fresh})[0], g.greedy[i]);
  }
}

int count_int4_layers(const Engine& engine) {
  int n = 0;
  for (const GraphNode& node : engine.metadata().graph.nodes)
    n += node.type == LayerType::kMATMUL_INT4;
  return n;
}

// Packed (kMATMUL_INT4, the default) and dequantized at load, with and without desc_act.
TEST(Gptq, LogitsAndGreedyTokensMatchDequantizedGoldens) {
  for (const std::string& dir : {kGPTQ, kGPTQ_ACT})
    for (const bool dequantize : {false, true}) {
      SCOPED_TRACE(dir + (dequantize ? " dequantized" : " packed"));
      auto engine =
          Engine::create(build_llama(dir, {.dtype = DataType::kFLOAT, .dequantize = dequantize}));
      EXPECT_EQ(count_int4_layers(*engine), dequantize ? 0 : 14);  // 7 per layer
      EXPECT_NE(engine->metadata()
                    .properties.at("model.quantization")
                    .find(dequantize ? "dequantized" : "packed"),
                std::string::npos);
      expect_goldens(*engine, dir);
    }
}

// A bf16 engine keeps the packed int4 weights and f16 scales as they are; only embeddings,
// norms and lm_head round to bf16 (these fixtures' weights are large, initializer_range 0.25).
// Stated tolerance 0.5 against the f32 goldens (measured 0.21 and 0.12).
TEST(Gptq, PackedBf16EngineKeepsInt4Weights) {
  for (const std::string& dir : {kGPTQ, kGPTQ_ACT}) {
    SCOPED_TRACE(dir);
    auto engine = Engine::create(build_llama(dir, {.dtype = DataType::kBF16}));
    EXPECT_EQ(count_int4_layers(*engine), 14);
    const testing::Golden g = testing::load_golden(dir);
    Generator gen(*engine);
    for (size_t i = 0; i < g.prompts.size(); ++i)
      EXPECT_LE(max_abs_diff(gen.logits(g.prompts[i]), g.logits[i]), 0.5f);
  }
}

TEST(Gptq, LoaderTakesEveryPackedTensor) {
  const LoadedLlama packed = load_from_gptq_llama(kGPTQ);
  EXPECT_TRUE(packed.unused.empty());
  const LoadedLlama dequantized = load_from_gptq_llama(kGPTQ, {}, std::nullopt, true);
  EXPECT_TRUE(dequantized.unused.empty());
  int found = 0;
  for (const auto& p : packed.model->named_parameters())
    if (p.name == "model.layers.0.mlp.down_proj.qweight") {
      ++found;
      EXPECT_EQ(p.value.shape(), (Dims{16, 64}));
      EXPECT_EQ(p.value.dtype(), DataType::kINT32);
    }
  for (const auto& p : dequantized.model->named_parameters())
    if (p.name == "model.layers.0.self_attn.q_proj.weight") {
      ++found;
      EXPECT_EQ(p.value.shape(), (Dims{64, 64}));
    }
  EXPECT_EQ(found, 2);
  std::string message;
  EXPECT_EQ(error_of([] { load_from_gptq_llama((kLLAMA / "llama_gqa").string()); }, &message),
            ErrorCode::kINVALID_ARGUMENT);
  EXPECT_NE(message.find("not a GPTQ checkpoint"), std::string::npos) << message;
}

TEST(Gptq, RefitsFromGptqCheckpoints) {
  // A packed GPTQ engine refit from the other GPTQ variant (new packed tensors, identity
  // recipes) gives that variant's goldens, and a float engine of the same architecture refits
  // from a GPTQ directory through the dequantized weights.
  auto engine = Engine::create(build_llama(kGPTQ, {.dtype = DataType::kFLOAT, .refit = true}));
  EXPECT_EQ(count_int4_layers(*engine), 14);
  const RefitSummary s = refit_from_hf_checkpoint(*engine, kGPTQ_ACT);
  EXPECT_GT(s.slots_changed, 0);
  expect_goldens(*engine, kGPTQ_ACT);
  refit_from_hf_checkpoint(*engine, kGPTQ);
  expect_goldens(*engine, kGPTQ);
  auto plain = Engine::create(
      build_llama((kLLAMA / "llama_gqa").string(), {.dtype = DataType::kFLOAT, .refit = true}));
  refit_from_hf_checkpoint(*plain, kGPTQ);
  expect_goldens(*plain, kGPTQ);
}

// A copy of the llama_gqa_gptq fixture in a temporary directory, to break.
class GptqBroken : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("bindery_gptq_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    for (const char* f : {"config.json", "model.safetensors", "quantize_config.json"})
      fs::copy_file(fs::path(kGPTQ) / f, dir_ / f);
  }
  void TearDown() override { fs::remove_all(dir_); }

  json config() const {
    std::ifstream in(dir_ / "config.json");
    return json::parse(in);
  }
  void set_quantization(const char* key, const json& value) {
    json c = config();
    c["quantization_config"][key] = value;
    std::ofstream(dir_ / "config.json") << c.dump(2);
  }
  ErrorCode load_error(std::string& message) const {
    return error_of([&] { load_from_gptq_llama(dir_.string()); }, &message);
  }
  fs::path dir_;
};

TEST_F(GptqBroken, EightBitsIsUnsupported) {
  set_quantization("bits", 8);
  std::string message;
  EXPECT_EQ(load_error(message), ErrorCode::kUNSUPPORTED);
  EXPECT_NE(message.find("'bits' is 8"), std::string::npos) << message;
}

TEST_F(GptqBroken, UnknownCheckpointFormatIsUnsupported) {
  set_quantization("checkpoint_format", "marlin");
  std::string message;
  EXPECT_EQ(load_error(message), ErrorCode::kUNSUPPORTED);
  EXPECT_NE(message.find("'checkpoint_format' is 'marlin'"), std::string::npos) << message;
  // Also through build_llama, which detects GPTQ the same way.
  EXPECT_EQ(error_of([&] { build_llama(dir_.string()); }), ErrorCode::kUNSUPPORTED);
}

TEST_F(GptqBroken, QuantizeConfigJsonAloneIsRead) {
  json c = config();
  c.erase("quantization_config");
  std::ofstream(dir_ / "config.json") << c.dump(2);
  json q;
  std::ifstream(dir_ / "quantize_config.json") >> q;
  q["bits"] = 3;
  std::ofstream(dir_ / "quantize_config.json") << q.dump(2);
  std::string message;
  EXPECT_EQ(load_error(message), ErrorCode::kUNSUPPORTED);
  EXPECT_NE(message.find("quantize_config.json"), std::string::npos) << message;
}

TEST_F(GptqBroken, QweightRowsNotInOver8IsAShapeError) {
  // Rewrite the checkpoint with one qweight of in/8 + 1 rows.
  const io::CheckpointReader reader = io::CheckpointReader::open(dir_ / "model.safetensors");
  std::vector<HostTensor> keep;
  std::vector<io::TensorToWrite> tensors;
  keep.reserve(reader.tensors().size());  // tensors point into it
  const std::string bad = "model.layers.1.mlp.down_proj.qweight";
  for (const io::StoredTensor& t : reader.tensors()) {
    HostTensor h = reader.read(t.name);
    Dims shape = t.shape;
    if (t.name == bad) {
      ++shape[0];
      HostTensor bigger = HostTensor::zeros(h.dtype(), shape);
      std::memcpy(bigger.data(), h.data(), h.size_bytes());
      h = std::move(bigger);
    }
    keep.push_back(std::move(h));
    tensors.push_back({t.name, t.dtype, shape, keep.back().data()});
  }
  io::write_safetensors((dir_ / "fresh.safetensors").string(), tensors);
  fs::rename(dir_ / "fresh.safetensors", dir_ / "model.safetensors");
  std::string message;
  EXPECT_EQ(load_error(message), ErrorCode::kSHAPE_MISMATCH);
  EXPECT_NE(message.find(bad), std::string::npos) << message;
  EXPECT_NE(message.find("[17, 64]"), std::string::npos) << message;
}

// The packing by hand, independent of the fixture script: a [8 out, 8 in] weight in one group
// (group_size -1), q[i, o] = (i + o) % 16 in bits 4i of column o's word, zero[o] = o packed
// along the outputs, scales 0.5. v1 stores zero - 1 (so unpacks o + 1); gptq_v2 stores zero.
TEST(Gptq, DequantizesAutoGptqPackingByHand) {
  std::vector<int32_t> qweight(8), g_idx(8, 0);
  for (int o = 0; o < 8; ++o) {
    uint32_t w = 0;
    for (int i = 0; i < 8; ++i) w |= static_cast<uint32_t>((i + o) % 16) << (4 * i);
    qweight[o] = static_cast<int32_t>(w);
  }
  uint32_t z = 0;
  for (int o = 0; o < 8; ++o) z |= static_cast<uint32_t>(o) << (4 * o);
  const int32_t qzeros = static_cast<int32_t>(z);
  const std::vector<uint16_t> scales(8, 0x3800);  // f16 0.5
  const fs::path file = fs::temp_directory_path() /
                        ("bindery_gptq_hand_" + std::to_string(::getpid()) + ".safetensors");
  const std::vector<io::TensorToWrite> tensors = {
      {"l.qweight", io::ElementType::kI32, {1, 8}, qweight.data()},
      {"l.qzeros", io::ElementType::kI32, {1, 1}, &qzeros},
      {"l.scales", io::ElementType::kF16, {1, 8}, scales.data()},
      {"l.g_idx", io::ElementType::kI32, {8}, g_idx.data()}};
  io::write_safetensors(file.string(), tensors);
  const io::CheckpointReader reader = io::CheckpointReader::open(file);
  EXPECT_TRUE(is_gptq_weight(reader, "l.weight"));
  for (const bool v2 : {false, true}) {
    SCOPED_TRACE(v2 ? "gptq_v2" : "gptq");
    const GptqConfig config{.bits = 4, .group_size = -1, .v2 = v2};
    const HostTensor w = dequantize_gptq(reader, config, "l.weight", {DataType::kFLOAT, {8, 8}});
    for (int o = 0; o < 8; ++o)
      for (int i = 0; i < 8; ++i)
        EXPECT_EQ(w.data_as<float>()[o * 8 + i], ((i + o) % 16 - (o + (v2 ? 0 : 1))) * 0.5f)
            << "o " << o << " i " << i;
  }
  // A group_size of 4 expects 2 groups of zeros and scales: the file has 1.
  const GptqConfig grouped{.bits = 4, .group_size = 4};
  std::string message;
  EXPECT_EQ(error_of(
                [&] {
                  dequantize_gptq(reader, grouped, "l.weight", {DataType::kFLOAT, {8, 8}});
                },
                &message),
            ErrorCode::kSHAPE_MISMATCH);
  EXPECT_NE(message.find("l.qzeros"), std::string::npos) << message;
  fs::remove(file);
}

}  // namespace
}  // namespace bindery::models

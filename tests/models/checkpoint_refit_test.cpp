// refit_from_checkpoint: any engine refit from a checkpoint file or directory, with names
// mapped, equals refitting from the same values in memory; bad checkpoints change nothing.

#include "bindery/models/checkpoint_refit.h"

#include <gtest/gtest.h>

#include "bindery/io/safetensors.h"
#include "bindery/models/llama.h"
#include "common/engine_util.h"
#include "common/temp_dir.h"

namespace bindery::testing {
namespace {

namespace fs = std::filesystem;
using models::CheckpointRefitOptions;
using models::refit_from_checkpoint;

// The weights as a safetensors file, each name prefixed (and, for `skip`, one left out).
void write_weights(const fs::path& file, const examples::WeightMap& w, const std::string& prefix,
                   const std::string& skip = "") {
  std::vector<io::TensorToWrite> tensors;
  for (const auto& [name, t] : w)
    if (name != skip)
      tensors.push_back({prefix + name, io::ElementType::kF32, t.shape(), t.data()});
  io::write_safetensors(file.string(), tensors);
}

TEST(CheckpointRefit, MappedNamesGiveWhatAFreshBuildGives) {
  const ExampleCase c = example_cases()[0];
  const auto a = c.weights(1), b = c.weights(2);
  const auto cfg = config_with({BuilderFlag::kREFIT});
  auto engine = build_engine(c.network(a), cfg);
  TempDir dir("checkpoint_refit");
  const fs::path file = dir.path() / "b.safetensors";
  write_weights(file, b, "model.");
  CheckpointRefitOptions options;
  for (const auto& [name, t] : b) options.name_map[name] = "model." + name;
  const models::RefitSummary s = refit_from_checkpoint(*engine, file.string(), options);
  EXPECT_EQ(s.weights_set, static_cast<int64_t>(b.size()));
  EXPECT_GT(s.slots_changed, 0);
  EXPECT_EQ(slot_checksums(*engine), slot_checksums(*build_engine(c.network(b), cfg)));
}

TEST(CheckpointRefit, LlamaDirectoryEqualsTheLlamaRefit) {
  const std::string kLLAMA = std::string(BINDERY_SOURCE_DIR) + "/tests/fixtures/llama/";
  auto generic = Engine::create(models::build_llama(kLLAMA + "llama_gqa", {.refit = true}));
  auto llama = Engine::create(models::build_llama(kLLAMA + "llama_gqa", {.refit = true}));
  refit_from_checkpoint(*generic, kLLAMA + "llama_gqa_b");
  models::refit_from_hf_checkpoint(*llama, kLLAMA + "llama_gqa_b");
  EXPECT_EQ(slot_checksums(*generic), slot_checksums(*llama));
}

TEST(CheckpointRefit, MissingAndMisshapenTensorsAreNamedAndChangeNothing) {
  const ExampleCase c = example_cases()[0];
  const auto a = c.weights(1), b = c.weights(2);
  auto engine = build_engine(c.network(a), config_with({BuilderFlag::kREFIT}));
  const auto sums = slot_checksums(*engine);
  TempDir dir("checkpoint_refit_bad");

  const fs::path lacking = dir.path() / "lacking.safetensors";
  write_weights(lacking, b, "", "layers.0.down.weight");
  std::string message;
  EXPECT_EQ(error_of([&] { refit_from_checkpoint(*engine, lacking.string()); }, &message),
            ErrorCode::kNOT_FOUND);
  EXPECT_NE(message.find("'layers.0.down.weight'"), std::string::npos) << message;

  auto reshaped = c.weights(2);
  HostTensor& w = reshaped.at("layers.0.down.weight");
  w.reshape({w.count()});
  const fs::path misshapen = dir.path() / "misshapen.safetensors";
  write_weights(misshapen, reshaped, "");
  EXPECT_EQ(error_of([&] { refit_from_checkpoint(*engine, misshapen.string()); }, &message),
            ErrorCode::kSHAPE_MISMATCH);
  EXPECT_NE(message.find("misshapen.safetensors"), std::string::npos) << message;
  EXPECT_EQ(slot_checksums(*engine), sums);
}

}  // namespace
}  // namespace bindery::testing

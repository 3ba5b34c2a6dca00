// CheckpointReader against the fixtures tools/make_checkpoint_fixtures.py wrote with torch and
// safetensors: every value read must equal what the writer wrote (expected.json).
#include "bindery/io/checkpoint_reader.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "bindery/error.h"
#include "common/error_util.h"

namespace bindery::io {
namespace {

namespace fs = std::filesystem;
const fs::path kFIXTURES = fs::path(BINDERY_SOURCE_DIR) / "tests/fixtures/checkpoints";

nlohmann::json expected_tensors() {
  std::ifstream in(kFIXTURES / "expected.json");
  return nlohmann::json::parse(in).at("tensors");
}

using bindery::testing::error_of;

// Compares what `reader` reads for `expected` (one entry of expected.json) with its values.
void expect_values(const CheckpointReader& reader, const nlohmann::json& expected) {
  const std::string name = expected.at("name");
  SCOPED_TRACE(expected.at("file").get<std::string>() + ": " + name);
  const StoredTensor& t = reader.tensor(name);
  EXPECT_EQ(element_type_name(t.dtype), expected.at("dtype").get<std::string>());
  EXPECT_EQ(t.shape, expected.at("shape").get<Dims>());
  const auto& values = expected.at("values");
  ASSERT_EQ(t.count(), static_cast<int64_t>(values.size()));
  if (is_floating(t.dtype)) {
    const HostTensor got = reader.read(name, DataType::kFLOAT);
    for (size_t i = 0; i < values.size(); ++i)
      ASSERT_EQ(got.data_as<float>()[i], static_cast<float>(values[i].get<double>())) << i;
  } else {
    const HostTensor got = reader.read(name, DataType::kINT64);
    for (size_t i = 0; i < values.size(); ++i)
      ASSERT_EQ(got.data_as<int64_t>()[i], values[i].get<int64_t>()) << i;
  }
}

TEST(CheckpointReader, EveryValueEqualsWhatTheWriterWrote) {
  int checked = 0;
  for (const auto& e : expected_tensors()) {
    const CheckpointReader reader = CheckpointReader::open(kFIXTURES / e.at("file"));
    expect_values(reader, e);
    ++checked;
  }
  EXPECT_GE(checked, 50);
}

TEST(CheckpointReader, ReadIntoOneBufferEqualsReadOfEachTensor) {
  for (const char* file : {"single/model.safetensors", "torch/pytorch_model.bin"}) {
    SCOPED_TRACE(file);
    const CheckpointReader reader = CheckpointReader::open(kFIXTURES / file);
    std::vector<ReadTarget> targets;
    int64_t total = 0;
    for (const StoredTensor& t : reader.tensors()) total += t.size_bytes() + 64;
    std::vector<std::byte> buffer(static_cast<size_t>(total), std::byte{0xAB});
    int64_t offset = 0;
    for (const StoredTensor& t : reader.tensors()) {
      targets.push_back({t.name, buffer.data() + offset, t.size_bytes(), std::nullopt});
      offset += t.size_bytes() + 64;
    }
    int64_t last_done = -1, last_total = -1;
    reader.read_into(targets, {.threads = 2, .progress = [&](int64_t done, int64_t all) {
                                 last_done = done;
                                 last_total = all;
                               }});
    EXPECT_EQ(last_done, last_total);
    for (const ReadTarget& target : targets) {
      const StoredTensor& t = reader.tensor(target.name);
      if (t.size_bytes() == 0) continue;
      // Contiguous tensors are their stored bytes; strided ones (torch views, all with a bindery
      // type) what read() gathers.
      const HostTensor gathered = t.is_contiguous() ? HostTensor() : reader.read(target.name);
      const void* want = t.is_contiguous() ? static_cast<const void*>(t.data) : gathered.data();
      ASSERT_EQ(std::memcmp(target.dst, want, static_cast<size_t>(t.size_bytes())), 0)
          << target.name;
    }
  }
}

TEST(CheckpointReader, ReadIntoConvertsBf16ToFloat) {
  const CheckpointReader reader = CheckpointReader::open(kFIXTURES / "sharded");
  const std::string name = "model.layers.3.weight";
  std::vector<float> out(24);
  const ReadTarget target{name, out.data(), 24 * 4, DataType::kFLOAT};
  reader.read_into(std::span(&target, 1));
  const HostTensor ref = reader.read(name, DataType::kFLOAT);
  EXPECT_EQ(std::memcmp(out.data(), ref.data(), 96), 0);
}

TEST(CheckpointReader, DetectsEveryDirectoryLayout) {
  struct Case {
    const char* dir;
    CheckpointFormat format;
    int shards;
    size_t tensors;
  };
  for (const Case& c : {Case{"single", CheckpointFormat::kSAFETENSORS, 1, 15},
                        Case{"sharded", CheckpointFormat::kSAFETENSORS, 2, 9},
                        Case{"torch", CheckpointFormat::kTORCH, 1, 19},
                        Case{"torch_sharded", CheckpointFormat::kTORCH, 2, 2},
                        Case{"meta", CheckpointFormat::kMETA, 2, 4}}) {
    SCOPED_TRACE(c.dir);
    const CheckpointReader reader = CheckpointReader::open(kFIXTURES / c.dir);
    EXPECT_EQ(reader.format(), c.format);
    EXPECT_EQ(reader.shard_count(), c.shards);
    EXPECT_EQ(reader.tensors().size(), c.tensors);
  }
  // The index file itself opens the same checkpoint.
  const CheckpointReader by_index =
      CheckpointReader::open(kFIXTURES / "sharded/model.safetensors.index.json");
  EXPECT_EQ(by_index.shard_count(), 2);
  EXPECT_EQ(by_index.metadata().at("format"), "pt");
}

TEST(CheckpointReader, ViewIsZeroCopyAndRefusesStridedOrForeignTypes) {
  const CheckpointReader reader = CheckpointReader::open(kFIXTURES / "torch");
  const Weights w = reader.view("base");
  EXPECT_EQ(w.values, reader.tensor("base").data);
  EXPECT_EQ(w.shape, (Dims{6, 4}));
  // row_view shares base's storage: its data is row 2 of base.
  EXPECT_EQ(reader.view("row_view").values, static_cast<const std::byte*>(w.values) + 2 * 4 * 4);
  EXPECT_EQ(error_of([&] { reader.view("transposed"); }), ErrorCode::kUNSUPPORTED);
  EXPECT_EQ(error_of([&] { reader.view("f64"); }), ErrorCode::kUNSUPPORTED);
}

TEST(CheckpointReader, NestedStateDictsFlattenWithDots) {
  const CheckpointReader reader = CheckpointReader::open(kFIXTURES / "torch_nested/checkpoint.pt");
  EXPECT_TRUE(reader.contains("model.f32"));
  EXPECT_TRUE(reader.contains("model.transposed"));
  EXPECT_TRUE(reader.contains("history.0"));
  EXPECT_FALSE(reader.contains("epoch"));
}

TEST(CheckpointReader, UnknownNameSuggestsTheClosest) {
  const CheckpointReader reader = CheckpointReader::open(kFIXTURES / "sharded");
  std::string message;
  EXPECT_EQ(error_of([&] { reader.tensor("model.layers.3.weigth"); }, &message),
            ErrorCode::kNOT_FOUND);
  EXPECT_NE(message.find("did you mean 'model.layers.3.weight'"), std::string::npos) << message;
}

TEST(CheckpointReader, RefusesMaliciousPickleWithoutRunningIt) {
  fs::remove("/tmp/bindery_pwned");
  std::string message;
  EXPECT_EQ(error_of([&] { CheckpointReader::open(kFIXTURES / "bad/malicious_os.pt"); }, &message),
            ErrorCode::kUNSUPPORTED);
  EXPECT_NE(message.find("refusing to load global os.system"), std::string::npos) << message;
  EXPECT_EQ(
      error_of([&] { CheckpointReader::open(kFIXTURES / "bad/malicious_posix.pt"); }, &message),
      ErrorCode::kUNSUPPORTED);
  EXPECT_NE(message.find("refusing to load global posix.system"), std::string::npos) << message;
  EXPECT_FALSE(fs::exists("/tmp/bindery_pwned"));
}

TEST(CheckpointReader, RefusesLegacyTorchFormatClearly) {
  std::string message;
  EXPECT_EQ(error_of([&] { CheckpointReader::open(kFIXTURES / "bad/legacy_format.pt"); }, &message),
            ErrorCode::kUNSUPPORTED);
  EXPECT_NE(message.find("legacy"), std::string::npos) << message;
}

TEST(CheckpointReader, RefusesTruncatedZip) {
  EXPECT_EQ(error_of([&] { CheckpointReader::open(kFIXTURES / "bad/truncated_zip.bin"); }),
            ErrorCode::kCORRUPT_FILE);
}

class CheckpointReaderDir : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("bindery_ckpt_test_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path copy_of(const char* fixture) {
    const fs::path out = dir_ / fixture;
    fs::copy(kFIXTURES / fixture, out, fs::copy_options::recursive);
    return out;
  }
  fs::path dir_;
};

TEST_F(CheckpointReaderDir, IndexNamingAMissingShardIsNotFound) {
  const fs::path d = copy_of("sharded");
  fs::remove(d / "model-00002-of-00002.safetensors");
  std::string message;
  EXPECT_EQ(error_of([&] { CheckpointReader::open(d); }, &message), ErrorCode::kNOT_FOUND);
  EXPECT_NE(message.find("model-00002-of-00002.safetensors"), std::string::npos) << message;
}

TEST_F(CheckpointReaderDir, IndexNamingAMissingTensorIsNotFound) {
  const fs::path d = copy_of("sharded");
  nlohmann::json index = nlohmann::json::parse(std::ifstream(d / "model.safetensors.index.json"));
  index["weight_map"]["model.layers.9.weight"] = "model-00001-of-00002.safetensors";
  std::ofstream(d / "model.safetensors.index.json") << index.dump();
  std::string message;
  EXPECT_EQ(error_of([&] { CheckpointReader::open(d); }, &message), ErrorCode::kNOT_FOUND);
  EXPECT_NE(message.find("model.layers.9.weight"), std::string::npos) << message;
}

TEST_F(CheckpointReaderDir, EmptyDirectoryListsTheLayoutsLookedFor) {
  std::string message;
  EXPECT_EQ(error_of([&] { CheckpointReader::open(dir_); }, &message), ErrorCode::kNOT_FOUND);
  EXPECT_NE(message.find("model.safetensors.index.json"), std::string::npos) << message;
  EXPECT_EQ(error_of([&] { CheckpointReader::open(dir_ / "nope"); }), ErrorCode::kNOT_FOUND);
}

TEST(CheckpointReader, ReadIntoChecksEveryTargetBeforeWritingAny) {
  const CheckpointReader reader = CheckpointReader::open(kFIXTURES / "single");
  std::vector<std::byte> a(1024, std::byte{0x5A}), b(4, std::byte{0x5A});
  const std::vector<ReadTarget> targets = {{"f32", a.data(), 1024, std::nullopt},
                                           {"i64", b.data(), 4, std::nullopt}};
  std::string message;
  EXPECT_EQ(error_of([&] { reader.read_into(targets); }, &message), ErrorCode::kINVALID_ARGUMENT);
  EXPECT_NE(message.find("'i64'"), std::string::npos) << message;
  EXPECT_TRUE(std::all_of(a.begin(), a.end(), [](std::byte x) { return x == std::byte{0x5A}; }));
}

TEST(CheckpointReader, ConversionsRefuseMixingFloatsAndIntegersAndCheckRange) {
  const CheckpointReader reader = CheckpointReader::open(kFIXTURES / "single");
  EXPECT_EQ(error_of([&] { reader.read("f32", DataType::kINT32); }), ErrorCode::kDTYPE_MISMATCH);
  EXPECT_EQ(error_of([&] { reader.read("i32", DataType::kFLOAT); }), ErrorCode::kDTYPE_MISMATCH);
  std::string message;
  EXPECT_EQ(error_of([&] { reader.read("i64", DataType::kINT8); }, &message),
            ErrorCode::kDTYPE_MISMATCH);
  EXPECT_NE(message.find("does not fit in i8"), std::string::npos) << message;
  const HostTensor bf16 = reader.read("f32", DataType::kBF16);
  EXPECT_EQ(bf16.dtype(), DataType::kBF16);
}

}  // namespace
}  // namespace bindery::io

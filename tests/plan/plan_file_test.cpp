// Plan files: save/load from memory and from disk, stripped and frozen plans, and a distinct
// error for every way a file can be wrong (empty, foreign, truncated, damaged, newer, corrupt).

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "plan/plan_json.h"
#include "plan_test_util.h"

namespace bindery {
namespace {

using namespace plan_test;
namespace fs = std::filesystem;

const Bytes& full_image() {
  static const Bytes img = sample_plan().serialize();
  return img;
}

std::span<const std::byte> slot_bytes(const Plan& p, int i) {
  const std::byte* d = p.slot_data(i);
  return d ? std::span<const std::byte>(d, static_cast<size_t>(p.metadata().slots[i].size_bytes))
           : std::span<const std::byte>();
}

bool same_bytes(std::span<const std::byte> a, std::span<const std::byte> b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin());
}

bool aligned(const void* p) { return reinterpret_cast<uintptr_t>(p) % kBLOB_ALIGNMENT == 0; }

class PlanFile : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("bindery_plan_test_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  std::string write(const std::string& name, const Bytes& bytes) const {
    std::ofstream(path(name), std::ios::binary)
        .write(reinterpret_cast<const char*>(bytes.data()),
               static_cast<std::streamsize>(bytes.size()));
    return path(name);
  }
  fs::path dir_;
};

// ---- round trips ----

TEST(PlanRoundTrip, FromMemoryKeepsMetadataAndBlob) {
  const Plan original = sample_plan();
  const Plan back = Plan::from_memory(full_image());
  expect_same_metadata(original.metadata(), back.metadata());
  ASSERT_TRUE(back.has_blob());
  EXPECT_TRUE(same_bytes(back.blob(), original.blob()));
  EXPECT_TRUE(aligned(back.blob().data()));
  for (int i = 0; i < static_cast<int>(back.metadata().slots.size()); ++i) {
    EXPECT_EQ(back.slot_data(i), back.blob().data() + back.metadata().slots[i].offset);
    EXPECT_TRUE(same_bytes(slot_bytes(back, i), slot_bytes(original, i)));
  }
}

TEST(PlanRoundTrip, FromMemoryAlignsTheBlobWhateverTheInput) {
  Bytes shifted(full_image().size() + 1);
  std::copy(full_image().begin(), full_image().end(), shifted.begin() + 1);
  const Plan back = Plan::from_memory(std::span(shifted).subspan(1));
  EXPECT_TRUE(aligned(back.blob().data()));
  EXPECT_TRUE(same_bytes(back.blob(), sample_plan().blob()));
}

TEST(PlanRoundTrip, SerializationIsDeterministicAndStable) {
  EXPECT_EQ(sample_plan().serialize(), full_image());
  EXPECT_EQ(Plan::from_memory(full_image()).serialize(), full_image());
}

TEST(PlanRoundTrip, WeightsSectionIsAlignedInTheFile) {
  const Layout l = layout_of(full_image());
  EXPECT_EQ(l.meta_offset, l.header);
  EXPECT_EQ(l.weights_offset % kBLOB_ALIGNMENT, 0u);
  EXPECT_EQ(l.meta_offset + l.meta_size, l.weights_offset);  // padding is part of the metadata
  EXPECT_EQ(l.weights_size, 1836u);
  EXPECT_EQ(l.weights_offset + l.weights_size, full_image().size());
}

TEST_F(PlanFile, SaveAndLoadMapTheBlob) {
  const Plan original = sample_plan();
  original.save(path("a.plan"));
  const Plan back = Plan::load(path("a.plan"));
  expect_same_metadata(original.metadata(), back.metadata());
  ASSERT_TRUE(back.has_blob());
  EXPECT_TRUE(aligned(back.blob().data()));
  EXPECT_TRUE(same_bytes(back.blob(), original.blob()));
  EXPECT_EQ(back.serialize(), full_image());
  EXPECT_FALSE(fs::exists(path("a.plan") + ".tmp." + std::to_string(::getpid())));
}

TEST_F(PlanFile, LoadedPlanOutlivesMovesAndTheFile) {
  sample_plan().save(path("b.plan"));
  Plan p = Plan::load(path("b.plan"));
  fs::remove(path("b.plan"));
  Plan moved = std::move(p);
  Plan assigned;
  assigned = std::move(moved);
  EXPECT_TRUE(same_bytes(assigned.blob(), sample_plan().blob()));
}

TEST(PlanRoundTrip, PlanWithoutWeightsHasOneSection) {
  PlanMetadata m;
  m.graph.tensors.push_back({"x", {DataType::kFLOAT, {2}}, TensorKind::kINPUT});
  m.graph.inputs = m.graph.outputs = {0};
  const Bytes img = Plan(m, HostTensor()).serialize();
  EXPECT_EQ(get32(img, 16), 1u);
  const Plan back = Plan::from_memory(img);
  EXPECT_TRUE(back.has_blob());
  EXPECT_TRUE(back.blob().empty());
  EXPECT_EQ(back.metadata().graph.tensors[0].name, "x");
}

TEST(PlanRoundTrip, DefaultPlanSerializes) {
  const Plan p;
  EXPECT_FALSE(p.has_blob());
  EXPECT_EQ(Plan::from_memory(p.serialize()).metadata().slots.size(), 0u);
}

TEST(PlanApi, FindsSourcesAndSlotsByName) {
  const PlanMetadata m = sample_metadata();
  EXPECT_EQ(m.find_source("bn.var"), 6);
  EXPECT_EQ(m.find_source("nope"), -1);
  EXPECT_EQ(m.find_slot("baked.i8"), 5);
  EXPECT_EQ(m.find_slot("w.a"), -1);
}

TEST(PlanApi, RejectsMisuse) {
  PlanMetadata m = sample_metadata();
  EXPECT_THROW((void)Plan(m, HostTensor(DataType::kUINT8, {100})), Error);
  const Plan p = sample_plan();
  EXPECT_THROW(p.slot_data(6), Error);
  EXPECT_THROW(p.slot_data(-1), Error);
  m.slots[2].offset = 4096;  // outside the blob
  try {
    Plan(m, sample_blob(m)).serialize();
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kINVALID_ARGUMENT);
    EXPECT_NE(std::string(e.what()).find("slots[2].offset"), std::string::npos) << e.what();
  }
}

// ---- stripped and frozen plans ----

TEST(PlanStripped, StoresOnlyTheBakedSlots) {
  const Plan full = sample_plan();
  const Bytes img = full.serialize({.exclude_weights = true});
  EXPECT_LT(img.size(), full_image().size());
  EXPECT_EQ(layout_of(img).weights_size, 256u + 300u);  // f16[16] padded, then i8[300]
  const Plan back = Plan::from_memory(img);
  EXPECT_TRUE(back.metadata().stripped);
  EXPECT_TRUE(back.metadata().refit_info);
  EXPECT_FALSE(back.has_blob());
  EXPECT_TRUE(back.blob().empty());
  EXPECT_EQ(back.metadata().blob_size, full.metadata().blob_size);
  for (int i = 0; i < 6; ++i) {
    const bool refittable = back.metadata().slots[i].refittable;
    EXPECT_EQ(back.slot_data(i) == nullptr, refittable) << i;
    EXPECT_EQ(back.metadata().slots[i].offset, full.metadata().slots[i].offset) << i;
    if (!refittable) {
      EXPECT_TRUE(same_bytes(slot_bytes(back, i), slot_bytes(full, i))) << i;
      EXPECT_TRUE(aligned(back.slot_data(i))) << i;
    }
  }
  // Written again it stays stripped, byte for byte, also through a file.
  EXPECT_EQ(back.serialize(), img);
  EXPECT_EQ(back.serialize({.exclude_weights = true}), img);
}

TEST(PlanStripped, TenMillionRefittableWeightsStripToUnderOnePercent) {
  PlanMetadata m;
  m.flags.set(BuilderFlag::kREFIT);
  m.sources.push_back({"w", {DataType::kFLOAT, {10'000'000}}, true, std::nullopt});
  m.slots.push_back(make_slot("w", DataType::kFLOAT, {10'000'000}, 0, true,
                              {{"w"}, {step(RecipeOp::kSOURCE, {0})}}));
  m.blob_size = m.slots[0].size_bytes;
  m.graph.tensors.push_back({"w", m.slots[0].desc, TensorKind::kWEIGHT, 0, true});
  m.graph.outputs = {0};
  const Plan plan(m, HostTensor::zeros(DataType::kUINT8, {m.blob_size}));
  const size_t full = plan.serialize().size();
  const size_t stripped = plan.serialize({.exclude_weights = true}).size();
  EXPECT_GT(full, 40'000'000u);
  EXPECT_LT(stripped * 100, full) << stripped << " of " << full;
  EXPECT_EQ(get32(plan.serialize({.exclude_weights = true}), 16), 1u);  // no weights section
}

TEST(PlanStripped, PlanWithTheWholeBlobIsWrittenWhole) {
  // An engine refit after loading a stripped plan hands its full blob back with stripped set.
  PlanMetadata m = sample_metadata();
  m.stripped = true;
  HostTensor blob = sample_blob(m);
  const Plan back = Plan::from_memory(Plan(m, std::move(blob)).serialize());
  EXPECT_FALSE(back.metadata().stripped);
  EXPECT_TRUE(same_bytes(back.blob(), sample_plan().blob()));
}

TEST(PlanStripped, PlanWithoutDataIsWrittenStripped) {
  PlanMetadata m = sample_metadata();
  EXPECT_THROW(Plan(m, HostTensor()).serialize(), Error);  // its baked slots have no data
  m.slots.resize(4);                                       // keep the refittable ones only
  m.blob_size = 1024 + 128;
  for (GraphTensor& t : m.graph.tensors) t.slot = t.slot >= 4 ? 0 : t.slot;
  const Plan back = Plan::from_memory(Plan(m, HostTensor()).serialize());
  EXPECT_TRUE(back.metadata().stripped);
}

TEST(PlanFrozen, DropsRecipesSourcesAndRefitFlags) {
  const Plan plan = sample_plan();
  const Plan back = Plan::from_memory(plan.serialize({.include_refit = false}));
  const PlanMetadata& m = back.metadata();
  EXPECT_FALSE(m.refit_info);
  EXPECT_FALSE(m.stripped);
  EXPECT_TRUE(m.sources.empty());
  EXPECT_FALSE(m.flags.refittable());
  EXPECT_TRUE(m.flags.has(BuilderFlag::kFP16));
  for (const Slot& s : m.slots) {
    EXPECT_FALSE(s.refittable) << s.name;
    EXPECT_TRUE(s.recipe.sources.empty() && s.recipe.steps.empty()) << s.name;
  }
  EXPECT_TRUE(same_bytes(back.blob(), plan.blob()));
  EXPECT_EQ(back.metadata().graph.nodes.size(), plan.metadata().graph.nodes.size());
}

TEST(PlanFrozen, CannotExcludeWeightsOrFreezeAStrippedPlan) {
  try {
    sample_plan().serialize({.exclude_weights = true, .include_refit = false});
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kINVALID_ARGUMENT);
  }
  const Plan stripped = Plan::from_memory(sample_plan().serialize({.exclude_weights = true}));
  EXPECT_THROW(stripped.serialize({.include_refit = false}), Error);
}

// ---- every way a file can be wrong ----

TEST(PlanErrors, EmptyFileIsTruncated) {
  EXPECT_LOAD_ERROR(Bytes{}, ErrorCode::kTRUNCATED_FILE, "<memory> is empty");
}

TEST(PlanErrors, ForeignFilesHaveBadMagic) {
  EXPECT_LOAD_ERROR(to_bytes("\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x02\0\0\0"),
                    ErrorCode::kBAD_MAGIC,
                    "not a bindery plan: <memory> starts with 89 50 4e 47 0d 0a 1a 0a");
  EXPECT_LOAD_ERROR(to_bytes("hello, this is not a plan at all, but it is long enough"),
                    ErrorCode::kBAD_MAGIC, "(\"hello, t\")");
  EXPECT_LOAD_ERROR(to_bytes("PK"), ErrorCode::kBAD_MAGIC, "50 4b");
  EXPECT_LOAD_ERROR(to_bytes("BINDERZ"), ErrorCode::kBAD_MAGIC, "not a bindery plan");
  EXPECT_LOAD_ERROR(to_bytes(std::string("BINDERY\x01", 8) + std::string(100, '\0')),
                    ErrorCode::kBAD_MAGIC, "not a bindery plan");
}

TEST(PlanErrors, TruncatedAtEveryByteOfTheHeader) {
  const size_t header = layout_of(full_image()).header;
  for (size_t n = 0; n < header; ++n)
    EXPECT_LOAD_ERROR(prefix(full_image(), n), ErrorCode::kTRUNCATED_FILE, "<memory> is");
}

TEST(PlanErrors, TruncatedInsideSections) {
  const Layout l = layout_of(full_image());
  const Bytes& img = full_image();
  EXPECT_LOAD_ERROR(prefix(img, l.header), ErrorCode::kTRUNCATED_FILE,
                    "the metadata section needs bytes [96, ");
  EXPECT_LOAD_ERROR(prefix(img, l.header + l.meta_size / 2), ErrorCode::kTRUNCATED_FILE,
                    "metadata section");
  EXPECT_LOAD_ERROR(prefix(img, l.weights_offset), ErrorCode::kTRUNCATED_FILE,
                    "the weights section needs bytes");
  EXPECT_LOAD_ERROR(prefix(img, l.weights_offset + 1000), ErrorCode::kTRUNCATED_FILE,
                    "found " + std::to_string(l.weights_offset + 1000) + " bytes");
  EXPECT_LOAD_ERROR(prefix(img, img.size() - 1), ErrorCode::kTRUNCATED_FILE, "weights section");
  const Bytes stripped = sample_plan().serialize({.exclude_weights = true});
  EXPECT_LOAD_ERROR(prefix(stripped, stripped.size() - 1), ErrorCode::kTRUNCATED_FILE,
                    "weights section");
}

TEST(PlanErrors, TrailingBytesAreCorrupt) {
  Bytes img = full_image();
  img.push_back(std::byte{0});
  EXPECT_LOAD_ERROR(img, ErrorCode::kCORRUPT_FILE, "1 unexpected bytes after the last section");
}

TEST(PlanErrors, BitFlipsInTheHeader) {
  const Bytes& img = full_image();
  const size_t header = layout_of(img).header;
  for (size_t byte = 0; byte < header; ++byte) {
    for (int bit = 0; bit < 8; ++bit) {
      const auto err = load_error(flip(img, byte, bit));
      ASSERT_TRUE(err.has_value()) << byte << ":" << bit;
      ErrorCode want = ErrorCode::kCHECKSUM_MISMATCH;
      if (byte < 8) want = ErrorCode::kBAD_MAGIC;
      // The version field: too new when the flip raises it past this build's version (a flip
      // that lowers it reads as an older plan, caught by the header checksum).
      if (byte >= 8 && byte < 12 && get32(flip(img, byte, bit), 8) > kPLAN_FORMAT_VERSION)
        want = ErrorCode::kVERSION_TOO_NEW;
      if (byte >= 16 && byte < 20 && header_bytes(get32(flip(img, byte, bit), 16)) > img.size())
        want = ErrorCode::kTRUNCATED_FILE;
      EXPECT_EQ(err->code(), want) << byte << ":" << bit << " " << err->what();
    }
  }
  EXPECT_LOAD_ERROR(flip(img, 13), ErrorCode::kCHECKSUM_MISMATCH, "header checksum mismatch");
}

TEST(PlanErrors, BitFlipsInTheSections) {
  const Bytes& img = full_image();
  const Layout l = layout_of(img);
  for (size_t byte = l.meta_offset; byte < l.meta_offset + l.meta_size; ++byte)
    EXPECT_LOAD_ERROR(flip(img, byte, static_cast<int>(byte % 8)), ErrorCode::kCHECKSUM_MISMATCH,
                      "checksum mismatch in the metadata section");
  for (size_t byte = l.weights_offset; byte < img.size(); ++byte)
    EXPECT_LOAD_ERROR(flip(img, byte, static_cast<int>(byte % 8)), ErrorCode::kCHECKSUM_MISMATCH,
                      "checksum mismatch in the weights section");
}

TEST(PlanErrors, NewerVersionIsRefusedAsSuch) {
  Bytes img = full_image();
  put32(img, 8, 7);
  fix_checksums(img);
  EXPECT_LOAD_ERROR(
      img, ErrorCode::kVERSION_TOO_NEW,
      "<memory>: plan format 7, this build reads up to " + std::to_string(kPLAN_FORMAT_VERSION));
  put32(img, 8, 0xffffffffu);  // read before the header checksum: a new format may change it
  EXPECT_LOAD_ERROR(img, ErrorCode::kVERSION_TOO_NEW, "plan format 4294967295");
  put32(img, 8, 0);
  fix_checksums(img);
  EXPECT_LOAD_ERROR(img, ErrorCode::kCORRUPT_FILE, "plan format 0 does not exist");
}

// An older format's plan loads and says which format it was read from (inspect shows it).
TEST(PlanFormat, LoadedPlansRecordTheFormatTheyWereReadFrom) {
  Bytes img = full_image();
  EXPECT_EQ(Plan::from_memory(img).metadata().format_version, kPLAN_FORMAT_VERSION);
  put32(img, 8, 2);
  fix_checksums(img);
  EXPECT_EQ(Plan::from_memory(img).metadata().format_version, 2u);
}

TEST(PlanErrors, HeaderFlagsMustMatchTheMetadata) {
  Bytes img = full_image();
  put32(img, 12, 1);
  fix_checksums(img);
  EXPECT_LOAD_ERROR(img, ErrorCode::kCORRUPT_FILE,
                    "plan metadata: flags: the header says REFIT, found REFIT|FP16");
}

TEST(PlanErrors, ImpossibleSectionTablesAreCorrupt) {
  const Bytes& img = full_image();
  std::string text = metadata_text(img);
  text.erase(text.find_last_not_of(' ') + 1);  // without the padding to the weights
  ASSERT_NE((layout_of(img).header + text.size()) % 256, 0u);
  const Bytes meta = to_bytes(text);
  const Bytes weights(img.begin() + static_cast<std::ptrdiff_t>(layout_of(img).weights_offset),
                      img.end());
  const uint32_t flags = get32(img, 12);
  EXPECT_FALSE(load_error(make_image(1, flags, {{1, meta}, {2, weights, 256}})).has_value());
  EXPECT_LOAD_ERROR(make_image(1, flags, {}), ErrorCode::kCORRUPT_FILE,
                    "expected 1 or 2 sections, found 0");
  EXPECT_LOAD_ERROR(make_image(1, flags, {{1, meta}, {2, weights, 256}, {2, {}}}),
                    ErrorCode::kCORRUPT_FILE, "expected 1 or 2 sections, found 3");
  EXPECT_LOAD_ERROR(make_image(1, flags, {{1, meta}, {9, weights, 256}}), ErrorCode::kCORRUPT_FILE,
                    "unknown section kind 9");
  EXPECT_LOAD_ERROR(make_image(1, flags, {{1, meta}, {1, meta}}), ErrorCode::kCORRUPT_FILE,
                    "the metadata section appears twice");
  EXPECT_LOAD_ERROR(make_image(1, flags, {{2, weights, 256}}), ErrorCode::kCORRUPT_FILE,
                    "no metadata section");
  EXPECT_LOAD_ERROR(make_image(1, flags, {{1, meta}, {2, weights, 8}}), ErrorCode::kCORRUPT_FILE,
                    "is not aligned to 256 bytes");
  EXPECT_LOAD_ERROR(make_image(1, flags, {{1, meta}}), ErrorCode::kCORRUPT_FILE,
                    "the blob needs 1836 bytes of weights section, the file has 0");
  EXPECT_LOAD_ERROR(make_image(1, flags, {{1, meta}, {2, weights, 256}}, 3),
                    ErrorCode::kCORRUPT_FILE, "3 unexpected bytes");
  Bytes overlapping = full_image();
  put64(overlapping, 24 + 8, 8);  // metadata "starts" inside the header
  fix_checksums(overlapping);
  EXPECT_LOAD_ERROR(overlapping, ErrorCode::kCORRUPT_FILE, "overlaps the header");
  Bytes past_end = full_image();
  put64(past_end, 24 + 32 + 16, ~uint64_t{0} - 100);  // weights size wraps around
  fix_checksums(past_end);
  EXPECT_LOAD_ERROR(past_end, ErrorCode::kTRUNCATED_FILE, "overflow");
}

TEST_F(PlanFile, ErrorsNameTheFile) {
  const auto expect_file_error = [&](const std::string& name, const Bytes& bytes, ErrorCode code) {
    const std::string p = write(name, bytes);
    try {
      (void)Plan::load(p);
      ADD_FAILURE() << name << " loaded";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), code) << e.what();
      EXPECT_NE(std::string(e.what()).find("'" + p + "'"), std::string::npos) << e.what();
    }
  };
  expect_file_error("empty.plan", {}, ErrorCode::kTRUNCATED_FILE);
  expect_file_error("image.png", to_bytes("\x89PNG\r\n\x1a\nabcdefghijklmnopqrstuvwxyz"),
                    ErrorCode::kBAD_MAGIC);
  expect_file_error("short.plan", prefix(full_image(), 1000), ErrorCode::kTRUNCATED_FILE);
  expect_file_error("flipped.plan", flip(full_image(), 900), ErrorCode::kCHECKSUM_MISMATCH);
  expect_file_error("corrupt.plan", with_metadata(full_image(), "{}"), ErrorCode::kCORRUPT_FILE);
  Bytes newer = full_image();
  put32(newer, 8, kPLAN_FORMAT_VERSION + 1);
  expect_file_error("newer.plan", newer, ErrorCode::kVERSION_TOO_NEW);
  EXPECT_THROW(Plan::load(path("does_not_exist.plan")), Error);
  try {
    Plan::load(path("does_not_exist.plan"));
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kIO);
  }
}

}  // namespace
}  // namespace bindery

// torch.save archives built here (zip + hand-assembled pickle, laid out as torch writes them),
// and the ways an archive can be damaged. Values against real torch files are checked by the
// fixture tests (tools/make_checkpoint_fixtures.py).

#include "bindery/io/torch_checkpoint.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "io/zip_archive.h"
#include "torch_test_util.h"

namespace bindery::io {
namespace {

using namespace torch_test;
namespace fs = std::filesystem;

class TorchCheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("bindery_torch_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string write(const Bytes& b, const std::string& name = "model.pt") {
    const std::string path = (dir_ / name).string();
    std::ofstream(path, std::ios::binary)
        .write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
    return path;
  }

  fs::path dir_;
};

// {"w": f32 (2, 3) on storage 0, "wt": its transpose, "b": bf16 (4,) on storage 1, "step": 3}
PickleBuilder state_dict_pickle() {
  PickleBuilder p;
  p.proto().ordered_dict().binput(0).mark();
  p.str("w").tensor("FloatStorage", "0", 6, 0, {2, 3}, {3, 1});
  p.str("wt").tensor("FloatStorage", "0", 6, 0, {3, 2}, {1, 3});
  p.str("b").tensor("BFloat16Storage", "1", 4, 0, {4}, {1});
  p.str("step").integer(3);
  return p.setitems().stop();
}

const Bytes kW = bytes_of<float>({1, 2, 3, 4, 5, 6});
const Bytes kB = bytes_of<uint16_t>({0x3f80, 0x4000, 0x4040, 0x4080});

// The archive as torch writes it: data descriptors, 64-byte aligned records.
ZipWriter torch_zip(const PickleBuilder& pickle, ZipWriter::Options record_options = {}) {
  ZipWriter z;
  z.add("archive/data.pkl", pickle.bytes(), {.descriptor = true});
  z.add("archive/byteorder", to_bytes("little"), {.descriptor = true});
  z.add("archive/data/0", kW, record_options);
  z.add("archive/data/1", kB, record_options);
  z.add("archive/version", to_bytes("3\n"), {.descriptor = true});
  return z;
}

TEST_F(TorchCheckpointTest, ReadsStoredRecordsInPlace) {
  const Bytes file = torch_zip(state_dict_pickle(), {.descriptor = true}).finish();
  const TorchCheckpoint c = TorchCheckpoint::open(write(file));
  ASSERT_EQ(c.tensors().size(), 3u);
  EXPECT_EQ(c.skipped(), std::vector<std::string>{"step"});
  const StoredTensor& w = c.tensors()[0];
  const StoredTensor& wt = c.tensors()[1];
  const StoredTensor& b = c.tensors()[2];
  EXPECT_EQ(w.name, "w");
  EXPECT_EQ(w.shape, (Dims{2, 3}));
  EXPECT_EQ(wt.strides, (Dims{1, 3}));
  EXPECT_EQ(b.dtype, ElementType::kBF16);
  EXPECT_EQ(w.file, c.path());
  // Zero-copy: file_offset is where the bytes are in the file, 64-byte aligned.
  ASSERT_GE(w.file_offset, 0);
  EXPECT_EQ(w.file_offset % 64, 0);
  EXPECT_EQ(std::memcmp(file.data() + w.file_offset, kW.data(), kW.size()), 0);
  EXPECT_EQ(std::memcmp(w.data, kW.data(), kW.size()), 0);
  EXPECT_EQ(wt.data, w.data);
  EXPECT_EQ(std::memcmp(b.data, kB.data(), kB.size()), 0);
  EXPECT_EQ(std::memcmp(file.data() + b.file_offset, kB.data(), kB.size()), 0);
}

TEST_F(TorchCheckpointTest, InflatesDeflatedRecords) {
  const Bytes file = torch_zip(state_dict_pickle(), {.deflate = true}).finish();
  const TorchCheckpoint c = TorchCheckpoint::open(write(file));
  ASSERT_EQ(c.tensors().size(), 3u);
  EXPECT_EQ(c.tensors()[0].file_offset, -1);
  EXPECT_EQ(std::memcmp(c.tensors()[0].data, kW.data(), kW.size()), 0);
  EXPECT_EQ(std::memcmp(c.tensors()[2].data, kB.data(), kB.size()), 0);
}

TEST_F(TorchCheckpointTest, ViewsSurviveAMove) {
  TorchCheckpoint a = TorchCheckpoint::open(write(torch_zip(state_dict_pickle()).finish()));
  const std::byte* data = a.tensors()[0].data;
  TorchCheckpoint b = std::move(a);
  EXPECT_EQ(b.tensors()[0].data, data);
  EXPECT_EQ(std::memcmp(b.tensors()[0].data, kW.data(), kW.size()), 0);
}

TEST_F(TorchCheckpointTest, EmptyStorageMayHaveNoBytes) {
  PickleBuilder p;
  p.proto().empty_dict().str("e").tensor("FloatStorage", "0", 0, 0, {0}, {1}).setitem().stop();
  ZipWriter z;
  z.add("archive/data.pkl", p.bytes());
  z.add("archive/data/0", {});
  const TorchCheckpoint c = TorchCheckpoint::open(write(z.finish()));
  ASSERT_EQ(c.tensors().size(), 1u);
  EXPECT_EQ(c.tensors()[0].count(), 0);
}

TEST_F(TorchCheckpointTest, RefusesTheLegacyFormat) {
  // What torch.save(..., _use_new_zipfile_serialization=False) begins with.
  const Bytes legacy = bytes_of<uint8_t>({0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9,
                                          0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e, 0x80, 0x02});
  expect_error([&] { TorchCheckpoint::open(write(legacy)); }, ErrorCode::kUNSUPPORTED,
               {"legacy (pre-1.6) torch.save format", "model.pt"});
}

TEST_F(TorchCheckpointTest, RejectsAFileThatIsNoZip) {
  expect_error([&] { TorchCheckpoint::open(write(to_bytes("hello, not a checkpoint"))); },
               ErrorCode::kCORRUPT_FILE, {"not a zip archive", "model.pt"});
  expect_error([&] { TorchCheckpoint::open(write({})); }, ErrorCode::kCORRUPT_FILE,
               {"not a zip archive"});
}

TEST_F(TorchCheckpointTest, RejectsGarbageWithAZipHeader) {
  Bytes b(300, std::byte{0x5a});
  std::memcpy(b.data(), "PK\x03\x04", 4);
  expect_error([&] { TorchCheckpoint::open(write(b)); }, ErrorCode::kCORRUPT_FILE,
               {"not a zip archive (it starts like one"});
}

TEST_F(TorchCheckpointTest, RejectsATruncatedCentralDirectory) {
  const Bytes whole = torch_zip(state_dict_pickle()).finish();
  const Bytes cut(whole.begin(), whole.end() - 40);  // into the central directory
  expect_error([&] { TorchCheckpoint::open(write(cut)); }, ErrorCode::kCORRUPT_FILE,
               {"not a zip archive"});
  // The end record claims an entry the directory does not have.
  const Bytes more = torch_zip(state_dict_pickle()).finish(6);
  expect_error([&] { TorchCheckpoint::open(write(more)); }, ErrorCode::kCORRUPT_FILE,
               {"zip central directory entry 5 is damaged or missing"});
}

TEST_F(TorchCheckpointTest, RequiresDataPkl) {
  ZipWriter z;
  z.add("archive/data/0", kW);
  z.add("archive/version", to_bytes("3\n"));
  expect_error([&] { TorchCheckpoint::open(write(z.finish())); }, ErrorCode::kCORRUPT_FILE,
               {"no <prefix>/data.pkl", "'archive/data/0'"});
}

TEST_F(TorchCheckpointTest, NamesTheMissingRecordOfAStorage) {
  PickleBuilder p;
  p.proto().empty_dict().str("x").tensor("FloatStorage", "7", 1, 0, {1}, {1}).setitem().stop();
  ZipWriter z;
  z.add("archive/data.pkl", p.bytes());
  expect_error([&] { TorchCheckpoint::open(write(z.finish())); }, ErrorCode::kCORRUPT_FILE,
               {"storage '7' has no record 'archive/data/7'", "model.pt"});
}

TEST_F(TorchCheckpointTest, RejectsARecordShorterThanItsStorage) {
  PickleBuilder p;
  p.proto().empty_dict().str("x").tensor("FloatStorage", "0", 7, 0, {7}, {1}).setitem().stop();
  ZipWriter z;
  z.add("archive/data.pkl", p.bytes());
  z.add("archive/data/0", kW);
  expect_error([&] { TorchCheckpoint::open(write(z.finish())); }, ErrorCode::kCORRUPT_FILE,
               {"storage '0'", "holds only 24 bytes", "archive/data.pkl"});
}

TEST_F(TorchCheckpointTest, RefusesAForbiddenGlobal) {
  PickleBuilder p;
  p.proto().global("os", "system").str("echo pwned").op(0x85).op('R').stop();
  ZipWriter z;
  z.add("archive/data.pkl", p.bytes());
  expect_error([&] { TorchCheckpoint::open(write(z.finish())); }, ErrorCode::kUNSUPPORTED,
               {"refusing to load global os.system", "model.pt"});
}

TEST_F(TorchCheckpointTest, RefusesBigEndian) {
  ZipWriter z;
  z.add("archive/data.pkl", state_dict_pickle().bytes());
  z.add("archive/byteorder", to_bytes("big"));
  expect_error([&] { TorchCheckpoint::open(write(z.finish())); }, ErrorCode::kUNSUPPORTED,
               {"big-endian"});
}

TEST_F(TorchCheckpointTest, ChecksThePickleCrc) {
  ZipWriter z;
  z.add("archive/data.pkl", state_dict_pickle().bytes(), {.crc_xor = 1});
  expect_error([&] { TorchCheckpoint::open(write(z.finish())); }, ErrorCode::kCHECKSUM_MISMATCH,
               {"archive/data.pkl", "CRC-32"});
}

// ---- the zip layer on its own, from memory ----

ZipArchive open_zip(const Bytes& b) { return ZipArchive::open(b, "'test.zip'"); }

TEST(Zip, ListsEntriesAndViewsStoredOnes) {
  ZipWriter z;
  z.add("a/x", kW, {.descriptor = true});
  z.add("a/y", kB);
  const Bytes b = z.finish();
  const ZipArchive zip = open_zip(b);
  ASSERT_EQ(zip.entries().size(), 2u);
  EXPECT_EQ(zip.entries()[1].name, "a/y");
  EXPECT_EQ(zip.find("a/y"), 1);
  EXPECT_EQ(zip.find("a/z"), -1);
  const ZipRecord r = zip.record(0, UINT64_MAX);
  EXPECT_EQ(r.bytes.data(), b.data() + r.offset);
  EXPECT_EQ(r.bytes.size(), kW.size());
  EXPECT_EQ(zip.extract(1, 100), kB);
}

TEST(Zip, RejectsALocalHeaderThatDisagrees) {
  ZipWriter a, b, c;
  a.add("x", kW, {.local_size = 8});  // minizip's own check
  expect_error([&] { open_zip(a.finish()).record(0, UINT64_MAX); }, ErrorCode::kCORRUPT_FILE,
               {"'x'", "local header"});
  b.add("x", kW, {.descriptor = true, .local_size = 8});  // ours: minizip skips it
  expect_error([&] { open_zip(b.finish()).record(0, UINT64_MAX); }, ErrorCode::kCORRUPT_FILE,
               {"the local header says 8 bytes"});
  c.add("x", kW, {.local_name = "y"});
  expect_error([&] { open_zip(c.finish()).record(0, UINT64_MAX); }, ErrorCode::kCORRUPT_FILE,
               {"names another entry"});
}

TEST(Zip, RejectsADataDescriptorThatDisagrees) {
  ZipWriter z;
  z.add("x", kW, {.descriptor = true});
  Bytes b = z.finish();
  // The descriptor follows the data: signature, crc, then the sizes; damage the size.
  const ZipRecord r = open_zip(b).record(0, UINT64_MAX);
  b[static_cast<size_t>(r.offset) + kW.size() + 8] = std::byte{99};
  expect_error([&] { open_zip(b).record(0, UINT64_MAX); }, ErrorCode::kCORRUPT_FILE,
               {"data descriptor"});
}

TEST(Zip, RejectsDataPastTheEnd) {
  ZipWriter z;
  z.add("x", kW, {.central_size = 1 << 20});
  expect_error([&] { open_zip(z.finish()).record(0, UINT64_MAX); }, ErrorCode::kCORRUPT_FILE,
               {"'x'"});
}

TEST(Zip, RefusesAZipBomb) {
  ZipWriter z;
  z.add("x", kW, {.deflate = true, .central_usize = 4'000'000'000});
  expect_error([&] { open_zip(z.finish()).record(0, UINT64_MAX); }, ErrorCode::kCORRUPT_FILE,
               {"beyond what deflate can reach"});
}

TEST(Zip, CapsWhatItInflates) {
  ZipWriter z;
  z.add("x", kW, {.deflate = true});
  const Bytes b = z.finish();  // the archive keeps no copy
  const ZipArchive zip = open_zip(b);
  expect_error([&] { zip.extract(0, 10); }, ErrorCode::kCORRUPT_FILE,
               {"24 bytes, more than the limit of 10"});
  EXPECT_EQ(zip.extract(0, 24), kW);
  EXPECT_EQ(zip.record(0, 24).offset, -1);
}

TEST(Zip, ChecksTheCrcOfInflatedEntries) {
  ZipWriter z;
  z.add("x", kW, {.deflate = true, .crc_xor = 0x100});
  expect_error([&] { open_zip(z.finish()).record(0, UINT64_MAX); }, ErrorCode::kCHECKSUM_MISMATCH,
               {"'x'", "CRC-32 mismatch"});
}

TEST(Zip, RefusesOtherMethodsAndEncryption) {
  ZipWriter a, b;
  a.add("x", kW, {.method = 12});  // bzip2
  expect_error([&] { open_zip(a.finish()).record(0, UINT64_MAX); }, ErrorCode::kUNSUPPORTED,
               {"compression method 12"});
  b.add("x", kW, {.flags = 1});
  expect_error([&] { open_zip(b.finish()); }, ErrorCode::kUNSUPPORTED, {"encrypted"});
}

// Every single-byte change and every truncation of a torch-like archive (stored and deflated
// records, data descriptors) either reads or fails with a bindery::Error; under the sanitizers
// (the fuzz build runs this test too) nothing is read out of bounds.
TEST(Zip, SurvivesEveryByteChangeAndTruncation) {
  ZipWriter z;
  z.add("archive/data.pkl", state_dict_pickle().bytes(), {.descriptor = true});
  z.add("archive/data/0", kW, {.deflate = true});
  z.add("archive/data/1", kB, {.descriptor = true});
  const Bytes good = z.finish();
  const auto exercise = [](const Bytes& b) {
    try {
      const ZipArchive zip = open_zip(b);
      for (size_t i = 0; i < zip.entries().size(); ++i) {
        try {
          const ZipRecord r = zip.record(i, 1 << 20);
          unsigned sum = 0;
          for (const std::byte x : r.bytes) sum += static_cast<unsigned>(x);
          EXPECT_LT(sum, 256u * (1u << 20));
          EXPECT_LE(zip.extract(i, 1 << 20).size(), size_t{1} << 20);
        } catch (const Error&) {
        }
      }
    } catch (const Error&) {
    }
  };
  for (size_t at = 0; at < good.size(); ++at) {
    for (const uint8_t v : {0x00, 0xff, 0x01, 0x80}) {
      Bytes b = good;
      b[at] = static_cast<std::byte>(v) ^ (v == 0x01 || v == 0x80 ? good[at] : std::byte{0});
      exercise(b);
    }
    exercise(Bytes(good.begin(), good.begin() + static_cast<ptrdiff_t>(at)));
  }
}

TEST(Zip, RejectsDuplicateNames) {
  ZipWriter z;
  z.add("x", kW);
  z.add("x", kB);
  expect_error([&] { open_zip(z.finish()); }, ErrorCode::kCORRUPT_FILE, {"'x' appears twice"});
}

}  // namespace
}  // namespace bindery::io

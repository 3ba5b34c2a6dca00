// safetensors: round trips through write_safetensors and SafetensorsFile, and one test per way
// a file can be malformed, each checking the error code and that the message names the culprit.
// Bad files are written byte by byte (raw_safetensors) so that each holds exactly one fault.

#include "bindery/io/safetensors.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "bindery/error.h"

namespace bindery::io {
namespace {

namespace fs = std::filesystem;

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() / ("bindery_io_test_" + std::to_string(::getpid())) /
           info->name();
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string file(const std::string& name) const { return (dir_ / name).string(); }

  // Writes `bytes` to `name` and returns its path.
  std::string write_bytes(const std::string& name, const std::string& bytes) const {
    const std::string path = file(name);
    std::ofstream(path, std::ios::binary).write(bytes.data(), std::streamsize(bytes.size()));
    return path;
  }

  // A safetensors image: the 8-byte length `length` (that of `header` unless given), `header`
  // and `data_size` bytes counting up from 0.
  std::string raw_safetensors(const std::string& name, const std::string& header, size_t data_size,
                              std::optional<uint64_t> length = {}) const {
    const uint64_t n = length.value_or(header.size());
    std::string bytes;
    for (int i = 0; i < 8; ++i) bytes += char(n >> (8 * i));
    bytes += header;
    for (size_t i = 0; i < data_size; ++i) bytes += char(i);
    return write_bytes(name, bytes);
  }

  // Opens `path` expecting an Error with `code` whose message contains each of `parts`.
  static void expect_error(const std::function<void()>& f, ErrorCode code,
                           const std::vector<std::string>& parts) {
    try {
      f();
      ADD_FAILURE() << "expected " << error_code_name(code) << ", nothing thrown";
    } catch (const Error& e) {
      EXPECT_EQ(error_code_name(e.code()), error_code_name(code)) << e.what();
      for (const std::string& p : parts)
        EXPECT_NE(std::string(e.what()).find(p), std::string::npos)
            << "message lacks \"" << p << "\": " << e.what();
    }
  }
  static void expect_open_error(const std::string& path, ErrorCode code,
                                std::vector<std::string> parts) {
    parts.push_back(path);
    expect_error([&] { SafetensorsFile::open(path); }, code, parts);
  }

  fs::path dir_;
};

// A tensor entry of a header, as JSON text.
std::string entry(const std::string& name, const std::string& dtype, const std::string& shape,
                  int begin, int end) {
  return "\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape +
         ",\"data_offsets\":[" + std::to_string(begin) + "," + std::to_string(end) + "]}";
}

TEST_F(SafetensorsTest, SafetensorsRoundTripsEveryElementType) {
  struct Case {
    ElementType dtype;
    Dims shape;
  };
  const std::vector<Case> cases = {
      {ElementType::kF64, {2, 3}}, {ElementType::kF32, {5}},     {ElementType::kF16, {3, 1, 2}},
      {ElementType::kBF16, {4}},   {ElementType::kF8_E4M3, {7}}, {ElementType::kF8_E5M2, {2, 2}},
      {ElementType::kI64, {3}},    {ElementType::kI32, {2, 2}},  {ElementType::kI16, {5}},
      {ElementType::kI8, {9}},     {ElementType::kU8, {1, 3}},   {ElementType::kBOOL, {6}},
      {ElementType::kF32, {}},     {ElementType::kF32, {0, 4}},  {ElementType::kI64, {3, 0}},
  };
  std::vector<std::vector<unsigned char>> data;
  std::vector<TensorToWrite> tensors;
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    std::vector<unsigned char> bytes(size_t(volume(c.shape) * element_size(c.dtype)));
    for (size_t j = 0; j < bytes.size(); ++j) bytes[j] = (unsigned char)(j * 7 + i);
    data.push_back(std::move(bytes));
    const std::string name =
        "t" + std::to_string(i) + "." + std::string(element_type_name(c.dtype));
    tensors.push_back({name, c.dtype, c.shape, data.back().empty() ? nullptr : data.back().data()});
  }
  const std::map<std::string, std::string> metadata = {{"format", "pt"}, {"note", "\"q\" é"}};
  const std::string path = file("all.safetensors");
  write_safetensors(path, tensors, metadata);

  const SafetensorsFile f = SafetensorsFile::open(path);
  EXPECT_EQ(f.path(), path);
  EXPECT_EQ(f.metadata(), metadata);
  EXPECT_EQ(f.data_offset() % 8, 0);
  ASSERT_EQ(f.tensors().size(), cases.size());
  int64_t previous_offset = 0;
  std::map<std::string, const StoredTensor*> by_name;
  for (const StoredTensor& t : f.tensors()) {
    EXPECT_GE(t.file_offset, previous_offset) << "tensors() not in data offset order";
    previous_offset = t.file_offset;
    by_name[t.name] = &t;
  }
  std::ifstream in(path, std::ios::binary);
  const std::string whole((std::istreambuf_iterator<char>(in)), {});
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(tensors[i].name);
    ASSERT_TRUE(by_name.count(tensors[i].name));
    const StoredTensor& t = *by_name[tensors[i].name];
    EXPECT_EQ(t.dtype, cases[i].dtype);
    EXPECT_EQ(t.shape, cases[i].shape);
    EXPECT_EQ(t.strides, contiguous_strides(cases[i].shape));
    EXPECT_TRUE(t.is_contiguous());
    EXPECT_EQ(t.file, path);
    EXPECT_EQ(t.size_bytes(), int64_t(data[i].size()));
    if (!data[i].empty()) {
      EXPECT_EQ(std::memcmp(t.data, data[i].data(), data[i].size()), 0);
      EXPECT_EQ(std::memcmp(whole.data() + t.file_offset, data[i].data(), data[i].size()), 0);
    }
  }
  EXPECT_EQ(by_name["t12.F32"]->shape, Dims{});  // 0-dim: one element
  EXPECT_EQ(by_name["t12.F32"]->count(), 1);
}

TEST_F(SafetensorsTest, SafetensorsWriterMatchesReferenceHeaderLayout) {
  const float values[2] = {1.0f, 2.0f};
  const TensorToWrite t[] = {{"w", ElementType::kF32, {2}, values}};
  const std::string path = file("one.safetensors");
  write_safetensors(path, t, {{"format", "pt"}});
  std::ifstream in(path, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), {});
  const std::string json =
      R"({"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  const size_t n = (json.size() + 7) / 8 * 8;
  ASSERT_EQ(bytes.size(), 8 + n + 8);
  uint64_t length = 0;
  for (int i = 7; i >= 0; --i) length = length << 8 | (unsigned char)bytes[size_t(i)];
  EXPECT_EQ(length, n);
  EXPECT_EQ(bytes.substr(8, n), json + std::string(n - json.size(), ' '));
  EXPECT_EQ(std::memcmp(bytes.data() + 8 + n, values, 8), 0);
}

TEST_F(SafetensorsTest, SafetensorsWritesAndReadsFileWithoutTensors) {
  const std::string path = file("empty.safetensors");
  write_safetensors(path, {});
  const SafetensorsFile f = SafetensorsFile::open(path);
  EXPECT_TRUE(f.tensors().empty());
  EXPECT_TRUE(f.metadata().empty());
  EXPECT_EQ(f.data_offset(), int64_t(fs::file_size(path)));
}

TEST_F(SafetensorsTest, SafetensorsOrdersTensorsByDataOffset) {
  const std::string header = "{" + entry("a", "U8", "[4]", 4, 8) + "," +
                             entry("z", "U8", "[4]", 0, 4) + "," + entry("m", "U8", "[0]", 4, 4) +
                             "}";
  const SafetensorsFile f = SafetensorsFile::open(raw_safetensors("o.safetensors", header, 8));
  ASSERT_EQ(f.tensors().size(), 3u);
  EXPECT_EQ(f.tensors()[0].name, "z");
  EXPECT_EQ(f.tensors()[1].name, "m");  // empty, sorts before "a" by (begin, end)
  EXPECT_EQ(f.tensors()[2].name, "a");
  EXPECT_EQ(f.tensors()[2].file_offset, 8 + int64_t(header.size()) + 4);
  EXPECT_EQ(std::to_integer<int>(f.tensors()[2].data[0]), 4);
}

TEST_F(SafetensorsTest, SafetensorsAcceptsEmptyTensorsSharingAnOffset) {
  const std::string header = "{" + entry("e1", "F32", "[0]", 0, 0) + "," +
                             entry("e2", "I64", "[2, 0]", 0, 0) + "," +
                             entry("x", "I16", "[2]", 0, 4) + "," + entry("e3", "F16", "[]", 4, 6) +
                             "," + entry("e4", "BF16", "[0, 5]", 6, 6) + "}";
  const SafetensorsFile f = SafetensorsFile::open(raw_safetensors("e.safetensors", header, 6));
  ASSERT_EQ(f.tensors().size(), 5u);
  EXPECT_EQ(f.tensors()[4].name, "e4");
  EXPECT_EQ(f.tensors()[4].count(), 0);
}

TEST_F(SafetensorsTest, SafetensorsViewsStayValidAfterMove) {
  const int32_t v[3] = {7, 8, 9};
  const TensorToWrite t[] = {{"v", ElementType::kI32, {3}, v}};
  const std::string path = file("m.safetensors");
  write_safetensors(path, t);
  SafetensorsFile a = SafetensorsFile::open(path);
  const std::byte* data = a.tensors()[0].data;
  SafetensorsFile b = std::move(a);
  EXPECT_EQ(b.tensors()[0].data, data);
  EXPECT_EQ(std::memcmp(b.tensors()[0].data, v, sizeof v), 0);
  EXPECT_EQ(b.path(), path);
}

// ---- malformed files ----

TEST_F(SafetensorsTest, SafetensorsRejectsFileShorterThanHeaderLength) {
  expect_open_error(write_bytes("short.safetensors", std::string("\x02\0\0\0", 4)),
                    ErrorCode::kTRUNCATED_FILE, {"4 bytes"});
  expect_open_error(write_bytes("zero.safetensors", ""), ErrorCode::kTRUNCATED_FILE, {"0 bytes"});
}

TEST_F(SafetensorsTest, SafetensorsRejectsHeaderLengthPastEndOfFile) {
  expect_open_error(raw_safetensors("past.safetensors", "{}", 0, 64), ErrorCode::kTRUNCATED_FILE,
                    {"header of 64 bytes", "10 bytes"});
}

TEST_F(SafetensorsTest, SafetensorsRejectsHeaderLongerThanLimit) {
  expect_open_error(raw_safetensors("huge.safetensors", "{}", 0, kMAX_SAFETENSORS_HEADER + 1),
                    ErrorCode::kCORRUPT_FILE, {"100000001", "limit"});
  expect_open_error(raw_safetensors("max.safetensors", "{}", 0, ~uint64_t{1}),
                    ErrorCode::kCORRUPT_FILE, {"18446744073709551614"});
}

TEST_F(SafetensorsTest, SafetensorsRejectsInvalidJson) {
  expect_open_error(raw_safetensors("bad.safetensors", "{\"a\": tru}", 0), ErrorCode::kCORRUPT_FILE,
                    {"not valid JSON", "byte 9"});
  expect_open_error(raw_safetensors("cut.safetensors", "{\"a\":", 0), ErrorCode::kCORRUPT_FILE,
                    {"not valid JSON"});
  expect_open_error(raw_safetensors("utf8.safetensors", "{\"\xff\":1}", 0),
                    ErrorCode::kCORRUPT_FILE, {"not valid JSON"});
  expect_open_error(raw_safetensors("nul.safetensors", std::string("{}\0\0", 4), 0),
                    ErrorCode::kCORRUPT_FILE, {"not valid JSON", "byte 2"});
}

TEST_F(SafetensorsTest, SafetensorsRejectsHeaderThatIsNotAnObject) {
  expect_open_error(raw_safetensors("array.safetensors", "[1, 2]", 0), ErrorCode::kCORRUPT_FILE,
                    {"does not start with '{'"});
  expect_open_error(raw_safetensors("space.safetensors", " {}", 0), ErrorCode::kCORRUPT_FILE,
                    {"does not start with '{'"});
  expect_open_error(raw_safetensors("empty.safetensors", "", 0), ErrorCode::kCORRUPT_FILE,
                    {"does not start with '{'", "empty"});
}

TEST_F(SafetensorsTest, SafetensorsRejectsDeeplyNestedJson) {
  const std::string deep =
      "{\"__metadata__\":" + std::string(100000, '[') + std::string(100000, ']') + "}";
  expect_open_error(raw_safetensors("deep.safetensors", deep, 0), ErrorCode::kCORRUPT_FILE,
                    {"deeper than"});
}

TEST_F(SafetensorsTest, SafetensorsRejectsUnknownDtype) {
  expect_open_error(
      raw_safetensors("dtype.safetensors", "{" + entry("w", "F4", "[2]", 0, 1) + "}", 1),
      ErrorCode::kUNSUPPORTED, {"'w'", "'F4'", "F64, F32, F16, BF16", "BOOL"});
  expect_open_error(
      raw_safetensors("case.safetensors", "{" + entry("w", "f32", "[1]", 0, 4) + "}", 4),
      ErrorCode::kUNSUPPORTED, {"'w'", "'f32'"});
}

TEST_F(SafetensorsTest, SafetensorsClipsHugeNamesInMessages) {
  const std::string name(1 << 20, 'n');
  const std::string path =
      raw_safetensors("long.safetensors", "{" + entry(name, name, "[1]", 0, 1) + "}", 1);
  try {
    SafetensorsFile::open(path);
    ADD_FAILURE() << "nothing thrown";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kUNSUPPORTED);
    EXPECT_LT(std::string(e.what()).size(), 1000u);
    EXPECT_NE(std::string(e.what()).find("1048576 bytes, clipped"), std::string::npos) << e.what();
  }
}

TEST_F(SafetensorsTest, SafetensorsRejectsShapeThatDisagreesWithByteCount) {
  expect_open_error(
      raw_safetensors("shape.safetensors", "{" + entry("w", "F32", "[2, 3]", 0, 20) + "}", 20),
      ErrorCode::kSHAPE_MISMATCH, {"'w'", "[2, 3]", "F32", "needs 24 bytes", "hold 20 bytes"});
}

TEST_F(SafetensorsTest, SafetensorsRejectsShapeWhoseSizeOverflows) {
  const std::string huge = "[4611686018427387904, 4, 0]";  // 2^62 × 4 overflows before the 0
  expect_open_error(
      raw_safetensors("ovf.safetensors", "{" + entry("w", "F32", huge, 0, 0) + "}", 0),
      ErrorCode::kSHAPE_MISMATCH, {"'w'", "overflows"});
  expect_open_error(
      raw_safetensors("ovf2.safetensors",
                      "{" + entry("w", "F64", "[1152921504606846976]", 0, 0) + "}", 0),
      ErrorCode::kSHAPE_MISMATCH, {"'w'", "overflows"});
  // Beyond int64: not a valid dim at all.
  expect_open_error(
      raw_safetensors("u64.safetensors",
                      "{" + entry("w", "U8", "[18446744073709551615]", 0, 0) + "}", 0),
      ErrorCode::kCORRUPT_FILE, {"'w'", "dim 0"});
}

TEST_F(SafetensorsTest, SafetensorsRejectsOverlappingOffsets) {
  const std::string header =
      "{" + entry("a", "U8", "[6]", 0, 6) + "," + entry("b", "U8", "[6]", 4, 10) + "}";
  expect_open_error(raw_safetensors("overlap.safetensors", header, 10), ErrorCode::kCORRUPT_FILE,
                    {"'a' [0, 6)", "'b' [4, 10)", "overlap"});
  // An empty tensor inside another one is an overlap too (the reference rule).
  const std::string inside =
      "{" + entry("a", "U8", "[6]", 0, 6) + "," + entry("e", "U8", "[0]", 3, 3) + "}";
  expect_open_error(raw_safetensors("inside.safetensors", inside, 6), ErrorCode::kCORRUPT_FILE,
                    {"'a'", "'e'", "overlap"});
}

TEST_F(SafetensorsTest, SafetensorsRejectsOffsetsPastDataSection) {
  const std::string header = "{" + entry("w", "U8", "[8]", 0, 8) + "}";
  expect_open_error(raw_safetensors("range.safetensors", header, 4), ErrorCode::kTRUNCATED_FILE,
                    {"'w'", "[0, 8)", "data section of 4 bytes"});
}

TEST_F(SafetensorsTest, SafetensorsRejectsOffsetsThatBeginAfterTheyEnd) {
  const std::string header = "{" + entry("w", "U8", "[0]", 4, 0) + "}";
  expect_open_error(raw_safetensors("rev.safetensors", header, 4), ErrorCode::kCORRUPT_FILE,
                    {"'w'", "[4, 0)", "begin after"});
}

TEST_F(SafetensorsTest, SafetensorsRejectsHoleBetweenTensors) {
  const std::string header =
      "{" + entry("a", "U8", "[4]", 0, 4) + "," + entry("b", "U8", "[4]", 6, 10) + "}";
  expect_open_error(raw_safetensors("hole.safetensors", header, 10), ErrorCode::kCORRUPT_FILE,
                    {"hole of 2 bytes [4, 6)", "'a'", "'b'"});
}

TEST_F(SafetensorsTest, SafetensorsRejectsHoleBeforeFirstTensor) {
  const std::string header = "{" + entry("b", "U8", "[4]", 2, 6) + "}";
  expect_open_error(raw_safetensors("lead.safetensors", header, 6), ErrorCode::kCORRUPT_FILE,
                    {"hole of 2 bytes [0, 2)", "before the first tensor", "'b'"});
}

TEST_F(SafetensorsTest, SafetensorsRejectsTrailingBytes) {
  const std::string header = "{" + entry("a", "U8", "[4]", 0, 4) + "}";
  expect_open_error(raw_safetensors("trail.safetensors", header, 7), ErrorCode::kCORRUPT_FILE,
                    {"3 trailing bytes", "'a'"});
  expect_open_error(raw_safetensors("only.safetensors", "{}", 5), ErrorCode::kCORRUPT_FILE,
                    {"5 trailing bytes", "no tensors"});
}

TEST_F(SafetensorsTest, SafetensorsRejectsMetadataThatIsNotStringMap) {
  expect_open_error(raw_safetensors("meta1.safetensors", R"({"__metadata__":{"epoch":3}})", 0),
                    ErrorCode::kCORRUPT_FILE, {"__metadata__", "'epoch'", "the number 3"});
  expect_open_error(raw_safetensors("meta2.safetensors", R"({"__metadata__":["a"]})", 0),
                    ErrorCode::kCORRUPT_FILE, {"__metadata__", "an array"});
  expect_open_error(raw_safetensors("meta3.safetensors", R"({"__metadata__":null})", 0),
                    ErrorCode::kCORRUPT_FILE, {"__metadata__", "null"});
}

TEST_F(SafetensorsTest, SafetensorsRejectsDuplicateTensorNames) {
  const std::string header =
      "{" + entry("w", "U8", "[4]", 0, 4) + "," + entry("w", "U8", "[4]", 4, 8) + "}";
  expect_open_error(raw_safetensors("dup.safetensors", header, 8), ErrorCode::kCORRUPT_FILE,
                    {"'w' twice"});
  expect_open_error(
      raw_safetensors("dupfield.safetensors",
                      R"({"w":{"dtype":"U8","dtype":"I8","shape":[1],"data_offsets":[0,1]}})", 1),
      ErrorCode::kCORRUPT_FILE, {"'dtype' twice", "'w'"});
}

TEST_F(SafetensorsTest, SafetensorsRejectsNegativeOrNonIntegerDims) {
  expect_open_error(
      raw_safetensors("neg.safetensors", "{" + entry("w", "U8", "[-1, 4]", 0, 4) + "}", 4),
      ErrorCode::kCORRUPT_FILE, {"'w'", "the number -1", "dim 0"});
  expect_open_error(
      raw_safetensors("float.safetensors", "{" + entry("w", "U8", "[2, 2.0]", 0, 4) + "}", 4),
      ErrorCode::kCORRUPT_FILE, {"'w'", "the number 2.0", "dim 1"});
  expect_open_error(
      raw_safetensors("str.safetensors", "{" + entry("w", "U8", "[\"4\"]", 0, 4) + "}", 4),
      ErrorCode::kCORRUPT_FILE, {"'w'", "the string '4'", "dim 0"});
  expect_open_error(
      raw_safetensors("notarr.safetensors", "{" + entry("w", "U8", "4", 0, 4) + "}", 4),
      ErrorCode::kCORRUPT_FILE, {"'w'", "shape the number 4"});
}

TEST_F(SafetensorsTest, SafetensorsRejectsMalformedDataOffsets) {
  expect_open_error(raw_safetensors("off.safetensors",
                                    R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0]}})", 1),
                    ErrorCode::kCORRUPT_FILE, {"'w'", "data_offsets"});
  expect_open_error(raw_safetensors("offneg.safetensors",
                                    R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[-1,0]}})", 1),
                    ErrorCode::kCORRUPT_FILE, {"'w'", "data_offsets"});
}

TEST_F(SafetensorsTest, SafetensorsRejectsEntryWithMissingOrUnknownField) {
  expect_open_error(
      raw_safetensors("missing.safetensors", R"({"w":{"dtype":"U8","shape":[0]}})", 0),
      ErrorCode::kCORRUPT_FILE, {"'w'", "'data_offsets'"});
  expect_open_error(
      raw_safetensors("extra.safetensors",
                      R"({"w":{"dtype":"U8","shape":[0],"data_offsets":[0,0],"x":1}})", 0),
      ErrorCode::kCORRUPT_FILE, {"'w'", "unknown field 'x'"});
  expect_open_error(raw_safetensors("notobj.safetensors", R"({"w":[1]})", 0),
                    ErrorCode::kCORRUPT_FILE, {"'w'", "an array"});
  expect_open_error(raw_safetensors("dtypenum.safetensors",
                                    R"({"w":{"dtype":1,"shape":[0],"data_offsets":[0,0]}})", 0),
                    ErrorCode::kCORRUPT_FILE, {"'w'", "dtype the number 1"});
}

TEST_F(SafetensorsTest, SafetensorsParseNamesThePathGiven) {
  const std::string bytes = std::string(8, '\0');
  const std::span<const std::byte> span(reinterpret_cast<const std::byte*>(bytes.data()),
                                        bytes.size());
  expect_error([&] { parse_safetensors(span, "<memory image>"); }, ErrorCode::kCORRUPT_FILE,
               {"<memory image>", "empty"});
}

TEST_F(SafetensorsTest, SafetensorsOpenNamesMissingFile) {
  expect_open_error(file("absent.safetensors"), ErrorCode::kIO, {});
}

// ---- writer arguments ----

TEST_F(SafetensorsTest, SafetensorsWriterRejectsDuplicateOrEmptyNames) {
  const float v[1] = {1};
  const std::string path = file("w.safetensors");
  const TensorToWrite dup[] = {{"a", ElementType::kF32, {1}, v}, {"a", ElementType::kF32, {1}, v}};
  expect_error([&] { write_safetensors(path, dup); }, ErrorCode::kINVALID_ARGUMENT,
               {"'a'", "twice", path});
  const TensorToWrite empty[] = {{"", ElementType::kF32, {1}, v}};
  expect_error([&] { write_safetensors(path, empty); }, ErrorCode::kINVALID_ARGUMENT,
               {"empty name"});
  const TensorToWrite reserved[] = {{"__metadata__", ElementType::kF32, {1}, v}};
  expect_error([&] { write_safetensors(path, reserved); }, ErrorCode::kINVALID_ARGUMENT,
               {"reserved"});
  EXPECT_TRUE(fs::is_empty(dir_)) << "a refused write left a file behind";
}

TEST_F(SafetensorsTest, SafetensorsWriterRejectsBadShapeOrData) {
  const std::string path = file("w.safetensors");
  const TensorToWrite negative[] = {{"n", ElementType::kF32, {2, -1}, nullptr}};
  expect_error([&] { write_safetensors(path, negative); }, ErrorCode::kINVALID_ARGUMENT,
               {"'n'", "[2, -1]"});
  const TensorToWrite no_data[] = {{"d", ElementType::kF32, {2}, nullptr}};
  expect_error([&] { write_safetensors(path, no_data); }, ErrorCode::kINVALID_ARGUMENT,
               {"'d'", "no data"});
  const TensorToWrite bad_utf8[] = {{"\xc3", ElementType::kF32, {0}, nullptr}};
  expect_error([&] { write_safetensors(path, bad_utf8); }, ErrorCode::kINVALID_ARGUMENT, {"UTF-8"});
  EXPECT_TRUE(fs::is_empty(dir_));
}

TEST_F(SafetensorsTest, SafetensorsWriterReplacesExistingFileAtomically) {
  const std::string path = write_bytes("r.safetensors", "old contents");
  const uint8_t v[3] = {1, 2, 3};
  const TensorToWrite t[] = {{"v", ElementType::kU8, {3}, v}};
  write_safetensors(path, t);
  EXPECT_EQ(SafetensorsFile::open(path).tensors().size(), 1u);
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 1)
      << "temporary file left behind";
}

// ---- sharded index ----

TEST_F(SafetensorsTest, SafetensorsIndexReadsWeightMap) {
  const std::string path = write_bytes("model.safetensors.index.json", R"({
    "metadata": {"total_size": 128},
    "weight_map": {"a.weight": "model-00001-of-00002.safetensors",
                   "b.weight": "model-00002-of-00002.safetensors"}})");
  const auto map = read_weight_map(path);
  EXPECT_EQ(map,
            (std::map<std::string, std::string>{{"a.weight", "model-00001-of-00002.safetensors"},
                                                {"b.weight", "model-00002-of-00002.safetensors"}}));
}

TEST_F(SafetensorsTest, SafetensorsIndexRejectsShardWithPath) {
  for (const std::string shard : {"../evil.safetensors", "sub/x.safetensors", "/etc/passwd",
                                  "a\\\\b.safetensors", "..", ".", ""}) {
    SCOPED_TRACE(shard);
    const std::string path = write_bytes("i.json", R"({"weight_map": {"w": ")" + shard + R"("}})");
    expect_error([&] { read_weight_map(path); }, ErrorCode::kCORRUPT_FILE,
                 {path, "'w'", "plain file name"});
  }
}

TEST_F(SafetensorsTest, SafetensorsIndexRejectsInvalidJson) {
  const std::string path = write_bytes("i.json", R"({"weight_map": {"w": "a.safetensors",}})");
  expect_error([&] { read_weight_map(path); }, ErrorCode::kCORRUPT_FILE,
               {path, "not valid JSON", "byte"});
}

TEST_F(SafetensorsTest, SafetensorsIndexRejectsMissingOrMistypedWeightMap) {
  const std::string none = write_bytes("none.json", R"({"metadata": {}})");
  expect_error([&] { read_weight_map(none); }, ErrorCode::kCORRUPT_FILE, {none, "weight_map"});
  const std::string list = write_bytes("list.json", R"({"weight_map": ["a"]})");
  expect_error([&] { read_weight_map(list); }, ErrorCode::kCORRUPT_FILE, {list, "an array"});
  const std::string num = write_bytes("num.json", R"({"weight_map": {"w": 3}})");
  expect_error([&] { read_weight_map(num); }, ErrorCode::kCORRUPT_FILE, {num, "'w'", "number 3"});
  const std::string dup = write_bytes("dup.json", R"({"weight_map": {"w": "a", "w": "b"}})");
  expect_error([&] { read_weight_map(dup); }, ErrorCode::kCORRUPT_FILE, {dup, "'w' twice"});
}

TEST_F(SafetensorsTest, SafetensorsIndexNamesMissingFile) {
  const std::string path = file("absent.index.json");
  expect_error([&] { read_weight_map(path); }, ErrorCode::kNOT_FOUND, {path});
}

}  // namespace
}  // namespace bindery::io

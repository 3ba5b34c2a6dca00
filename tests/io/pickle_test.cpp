// The restricted unpickler on hand-assembled streams: what torch.save writes, and one test per
// way a hostile stream can go wrong, each with its error code, opcode and byte offset.

#include "io/pickle.h"

#include <gtest/gtest.h>

#include <chrono>
#include <map>

#include "io/torch_state.h"
#include "torch_test_util.h"

namespace bindery::io {
namespace {

using namespace torch_test;

const std::string kORIGIN = "'test.pt' (archive/data.pkl)";

// Storage records by key; file offsets are 1000 + 100 × the order of insertion.
class Records {
 public:
  void add(const std::string& key, Bytes data) { records_[key] = std::move(data); }
  StorageResolver resolver() const {
    return [this](const std::string& key) {
      const auto it = records_.find(key);
      if (it == records_.end())
        throw Error(ErrorCode::kCORRUPT_FILE, "no record for storage '" + key + "'");
      const auto index = std::distance(records_.begin(), it);
      return StorageRecord{it->second.empty() ? nullptr : it->second.data(), it->second.size(),
                           1000 + 100 * index};
    };
  }

 private:
  std::map<std::string, Bytes> records_;
};

Records four_floats() {
  Records r;
  r.add("0", bytes_of<float>({1, 2, 3, 4, 5, 6}));
  return r;
}

// The records outlive the tensors that view them.
const Records& default_records() {
  static const Records r = four_floats();
  return r;
}

TorchState read(const PickleBuilder& p, const Records& r = default_records()) {
  return read_torch_state(p.bytes(), r.resolver(), "test.pt", kORIGIN);
}
Unpickled load(const PickleBuilder& p, const Records& r = default_records()) {
  return unpickle(p.bytes(), r.resolver(), kORIGIN);
}

float at(const StoredTensor& t, int64_t i) {
  float f;
  std::memcpy(&f, t.data + i * 4, 4);
  return f;
}

TEST(Pickle, ReadsNestedStateDictWithSharedStorage) {
  // {"model": OrderedDict(w: (2, 3), wt: its transpose), "epoch": 7}
  PickleBuilder p;
  p.proto().empty_dict().binput(0).mark();
  p.str("model").ordered_dict().mark();
  p.str("w").tensor("FloatStorage", "0", 6, 0, {2, 3}, {3, 1});
  p.str("wt").tensor("FloatStorage", "0", 6, 0, {3, 2}, {1, 3});
  p.setitems().str("epoch").integer(7).setitems().stop();
  const TorchState s = read(p);
  ASSERT_EQ(s.tensors.size(), 2u);
  const StoredTensor& w = s.tensors[0];
  const StoredTensor& wt = s.tensors[1];
  EXPECT_EQ(w.name, "model.w");
  EXPECT_EQ(wt.name, "model.wt");
  EXPECT_EQ(w.dtype, ElementType::kF32);
  EXPECT_EQ(w.shape, (Dims{2, 3}));
  EXPECT_EQ(wt.strides, (Dims{1, 3}));
  EXPECT_TRUE(w.is_contiguous());
  EXPECT_FALSE(wt.is_contiguous());
  EXPECT_EQ(w.data, wt.data);
  EXPECT_EQ(w.file, "test.pt");
  EXPECT_EQ(w.file_offset, 1000);
  EXPECT_EQ(at(wt, 1 * 1 + 0 * 3), 2.0f);  // wt[1][0] == w[0][1]
  EXPECT_EQ(s.skipped, std::vector<std::string>{"epoch"});
}

TEST(Pickle, ViewsAtAnOffsetPointIntoTheStorage) {
  PickleBuilder p;
  p.proto().mark().tensor("FloatStorage", "0", 6, 2, {2}, {2}).tuple().stop();
  const TorchState s = read(p);
  ASSERT_EQ(s.tensors.size(), 1u);
  EXPECT_EQ(s.tensors[0].name, "0");
  EXPECT_EQ(s.tensors[0].file_offset, 1000 + 2 * 4);
  EXPECT_EQ(at(s.tensors[0], 0), 3.0f);
  EXPECT_EQ(at(s.tensors[0], 2), 5.0f);
}

TEST(Pickle, ReadsProtocol4WithFrameMemoizeAndStackGlobal) {
  PickleBuilder p;
  p.proto(4).op(0x95).le(0, 8).empty_dict().op(0x94).short_str("a");
  p.stack_global("torch._utils", "_rebuild_parameter").mark();
  p.tensor("FloatStorage", "0", 6, 0, {6}, {1}).boolean(true).ordered_dict().tuple().op('R');
  p.setitem().stop();
  const TorchState s = read(p);
  ASSERT_EQ(s.tensors.size(), 1u);
  EXPECT_EQ(s.tensors[0].name, "a");
  EXPECT_EQ(s.tensors[0].shape, Dims{6});
}

TEST(Pickle, RootTensorHasTheEmptyName) {
  PickleBuilder p;
  p.proto().tensor("FloatStorage", "0", 6, 0, {}, {}).stop();
  const TorchState s = read(p);
  ASSERT_EQ(s.tensors.size(), 1u);
  EXPECT_EQ(s.tensors[0].name, "");
  EXPECT_EQ(s.tensors[0].count(), 1);
}

TEST(Pickle, EmptyStorageMayHaveNoBytes) {
  Records r;
  r.add("0", {});
  PickleBuilder p;
  p.proto().empty_dict().str("e").tensor("FloatStorage", "0", 0, 0, {0, 3}, {3, 1});
  p.setitem().stop();
  const TorchState s = read(p, r);
  ASSERT_EQ(s.tensors.size(), 1u);
  EXPECT_EQ(s.tensors[0].count(), 0);
  EXPECT_EQ(s.tensors[0].data, nullptr);
}

TEST(Pickle, IntKeysAndOtherScalarsNameEntries) {
  // {0: {"step": 1}, 1.5: None, True: "x"}
  PickleBuilder p;
  p.proto().empty_dict().mark().integer(0).empty_dict().str("step").integer(1).setitem();
  p.op('G').le(0, 0).raw(std::string("\x3f\xf8\0\0\0\0\0\0", 8)).none();
  p.boolean(true).str("x").setitems().stop();
  EXPECT_EQ(read(p).skipped, (std::vector<std::string>{"0.step", "1.5", "True"}));
}

TEST(Pickle, DictKeepsInsertionOrderAndOverwritesInPlace) {
  // {"b": 1, "a": 2, "b": 3} -> b=3, a=2, in that order (as Python). True and 1 are one key.
  PickleBuilder p;
  p.proto().empty_dict().mark().str("b").integer(1).str("a").integer(2).str("b").integer(3);
  p.integer(1).none().boolean(true).integer(5).setitems().stop();
  const Unpickled u = load(p);
  const auto& e = u.root->dict->entries();
  ASSERT_EQ(e.size(), 3u);
  EXPECT_EQ(e[0].first->text, "b");
  EXPECT_EQ(e[0].second->integer, 3);
  EXPECT_EQ(e[1].first->text, "a");
  EXPECT_EQ(e[2].first->integer, 1);
  EXPECT_EQ(e[2].second->integer, 5);
}

TEST(Pickle, ReadsIntegersOfEveryWidth) {
  PickleBuilder p;
  p.proto().mark().integer(200).integer(40000).integer(-5).integer(INT64_MIN);
  p.op(0x8a).le(0, 1);                                // LONG1 of 0 bytes: 0
  p.op(0x8a).le(2, 1).le(0xff7f, 2);                  // LONG1 2 bytes: -129
  p.op(0x8b).le(1, 4).le(0x80, 1);                    // LONG4 1 byte: -128
  p.op(0x8a).le(9, 1).le(UINT64_MAX, 8).le(0xff, 1);  // 9 bytes, sign extension only: -1
  p.tuple().stop();
  const Unpickled u = load(p);
  std::vector<int64_t> v;
  for (const PickleValue* x : u.root->items) v.push_back(x->integer);
  EXPECT_EQ(v, (std::vector<int64_t>{200, 40000, -5, INT64_MIN, 0, -129, -128, -1}));
}

TEST(Pickle, BytesFromCodecsEncodeAndBinbytes) {
  PickleBuilder p;
  p.proto().mark().global("_codecs", "encode").str("a\xc3\xbf").str("latin1").op(0x86).op('R');
  p.op('C').le(2, 1).raw("xy").tuple().stop();
  const Unpickled u = load(p);
  EXPECT_EQ(u.root->items[0]->kind, PickleKind::kBYTES);
  EXPECT_EQ(u.root->items[0]->text, "a\xff");
  EXPECT_EQ(u.root->items[1]->text, "xy");
}

TEST(Pickle, MemoizedValuesAreSharedNotCopied) {
  // t = (); 40 times: t = (t, t). Copies would be 2^40 tuples; sharing is 41 values, and the
  // flattening walk stops at a container reached by too many paths.
  PickleBuilder p;
  p.proto().op(')');
  for (int i = 0; i < 40; ++i) p.op('2').op(0x86);
  p.stop();
  const auto start = std::chrono::steady_clock::now();
  const Unpickled u = load(p);
  EXPECT_LT(u.arena->size(), 100u);
  expect_error([&] { flatten_torch_state(*u.root, "test.pt", kORIGIN); }, ErrorCode::kCORRUPT_FILE,
               {"a container reached by more than 8 paths"});
  FlattenLimits limits;
  limits.max_container_visits = SIZE_MAX;
  limits.max_visits = 10000;
  expect_error([&] { flatten_torch_state(*u.root, "test.pt", kORIGIN, limits); },
               ErrorCode::kCORRUPT_FILE, {"more than 10000 values"});
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
}

TEST(Pickle, SharedDictsAndListsStayFast) {
  // Found by the fuzzer (took 6 s under ASan): dicts and lists memoized and fetched with DUP
  // into a tree of 4 million paths.
  const Bytes input = bytes_of<uint8_t>(
      {0x80, 0x02, 0x7d, 0x71, 0x00, 0x28, 0x58, 0x05, 0x00, 0x00, 0x00, 0x61, 0x6f, 0x64, 0x65,
       0x32, 0x32, 0x71, 0x00, 0x28, 0x58, 0x05, 0x00, 0x00, 0x00, 0x6d, 0x6f, 0x64, 0x65, 0x32,
       0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x58, 0x05, 0x00, 0x00, 0x00, 0x6d,
       0x6f, 0x64, 0x65, 0x4a, 0x5d, 0x5d, 0x5d, 0x5d, 0x5d, 0x5d, 0x5d, 0x5d, 0x85, 0x85, 0x85,
       0x85, 0x85, 0x85, 0x85, 0x85, 0x85, 0x85, 0x85, 0x85, 0x85, 0x85, 0x87, 0x85, 0x85, 0x85,
       0x85, 0x85, 0x85, 0x85, 0x85, 0x85, 0x85, 0x85, 0x85, 0x85, 0x85, 0x85, 0x85, 0x85, 0x85,
       0x85, 0x85, 0x85, 0x85, 0x85, 0x85, 0x85, 0x85, 0x85, 0x28, 0x58, 0x05, 0x00, 0x00, 0x00,
       0x61, 0x6f, 0x64, 0x65, 0x32, 0x32, 0x71, 0x00, 0x28, 0x58, 0x05, 0x00, 0x00, 0x00, 0x6d,
       0x6f, 0x64, 0x65, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x58, 0x05,
       0x00, 0x00, 0x00, 0x6d, 0x6f, 0x64, 0x65, 0x4a, 0x5d, 0x5d, 0x5d, 0x5d, 0x5d, 0x5d, 0x5d,
       0x5d, 0x85, 0x85, 0x85, 0x85, 0x85, 0x85, 0x85, 0x85, 0x85, 0x85, 0x85, 0x85, 0x85, 0x85,
       0x87, 0x85, 0x85, 0x85, 0x85, 0x85, 0x85, 0x85, 0x85, 0x85, 0x85, 0x85, 0x85, 0x85, 0x85,
       0x85, 0x85, 0x85, 0x85, 0x85, 0x85, 0x85, 0x85, 0x85, 0x85, 0x85, 0x85, 0x85, 0x85, 0x87,
       0x28, 0x58, 0x05, 0x00, 0x00, 0x00, 0x6d, 0x6f, 0x64, 0x65, 0x32, 0x32, 0x32, 0x32, 0x32,
       0x32, 0x32, 0x88, 0x32, 0x32, 0x64, 0x32, 0x32, 0x32, 0x85, 0x85, 0x85, 0x85, 0x85, 0x85,
       0x85, 0x85, 0x85, 0x85, 0x87, 0x85, 0x85, 0x85, 0x85, 0x85, 0x85, 0x85, 0x85, 0x85, 0x85,
       0x85, 0x85, 0x85, 0x85, 0x85, 0x86, 0x86, 0x86, 0x86, 0x86, 0x86, 0x86, 0x86, 0x86, 0x86,
       0x86, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x7d,
       0x71, 0x00, 0x28, 0x58, 0x0a, 0x00, 0x00, 0x00, 0x65, 0x6d, 0x62, 0x2e, 0x77, 0x65, 0x69,
       0x67, 0x68, 0x74, 0x32, 0x32, 0x32, 0x6c, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32,
       0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x71, 0x0d, 0x4b, 0x03, 0x87,
       0x71, 0x22, 0x32, 0x6c, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x6c, 0x32, 0x32,
       0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x85, 0x87, 0x28, 0x58, 0x05, 0x00, 0x00, 0x00, 0x6d,
       0x6f, 0x64, 0x65, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x88, 0x32, 0x32, 0x64, 0x32,
       0x32, 0x32, 0x85, 0x85, 0x85, 0x85, 0x85, 0x85, 0x85, 0x85, 0x85, 0x85, 0x87, 0x85, 0x85,
       0x85, 0x85, 0x85, 0x85, 0x85, 0x85, 0x85, 0x85, 0x85, 0x85, 0x85, 0x85, 0x85, 0x86, 0x86,
       0x86, 0x86, 0x86, 0x86, 0x86, 0x86, 0x86, 0x86, 0x86, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32,
       0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x7d, 0x71, 0x00, 0x28, 0x58, 0x0a, 0x00, 0x00,
       0x00, 0x65, 0x6d, 0x62, 0x2e, 0x77, 0x65, 0x69, 0x67, 0x68, 0x74, 0x32, 0x32, 0x32, 0x6c,
       0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32,
       0x32, 0x32, 0x32, 0x71, 0x0d, 0x4b, 0x03, 0x87, 0x71, 0x22, 0x32, 0x6c, 0x32, 0x32, 0x32,
       0x32, 0x32, 0x32, 0x32, 0x32, 0x6c, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32,
       0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32,
       0x2e, 0x32, 0x32, 0xcd, 0x75, 0x2e});
  const auto start = std::chrono::steady_clock::now();
  expect_error([&] { read_torch_state(input, default_records().resolver(), "test.pt", kORIGIN); },
               ErrorCode::kCORRUPT_FILE, {"reached by more than 8 paths"});
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(500));
}

TEST(Pickle, CycleStopsTheWalk) {
  // l = []; l.append(l)
  PickleBuilder p;
  p.proto().op(']').binput(0).binget(0).op('a').stop();
  expect_error([&] { read(p); }, ErrorCode::kCORRUPT_FILE, {"reached by more than 8 paths"});
  const Unpickled u = load(p);
  FlattenLimits limits;
  limits.max_container_visits = SIZE_MAX;
  expect_error([&] { flatten_torch_state(*u.root, "test.pt", kORIGIN, limits); },
               ErrorCode::kCORRUPT_FILE, {"'0.0.0.0", "nested deeper than 256"});
}

TEST(Pickle, RefusesOsSystemViaGlobal) {
  PickleBuilder p;
  p.proto().global("os", "system").str("echo pwned").op(0x85).op('R').stop();
  expect_error([&] { read(p); }, ErrorCode::kUNSUPPORTED,
               {"refusing to load global os.system", "GLOBAL at byte 2", kORIGIN});
}

TEST(Pickle, RefusesOsSystemViaStackGlobal) {
  PickleBuilder p;
  p.proto(4).stack_global("os", "system").str("echo pwned").op(0x85).op('R').stop();
  expect_error([&] { read(p); }, ErrorCode::kUNSUPPORTED,
               {"refusing to load global os.system", "STACK_GLOBAL at byte 14"});
}

TEST(Pickle, RefusesBuiltinsEval) {
  PickleBuilder p;
  p.proto().global("builtins", "eval").str("1").op(0x85).op('R').stop();
  expect_error([&] { read(p); }, ErrorCode::kUNSUPPORTED,
               {"refusing to load global builtins.eval"});
}

TEST(Pickle, RefusesCallingAStorageType) {
  PickleBuilder p;
  p.proto().global("torch", "FloatStorage").op(')').op('R').stop();
  expect_error([&] { read(p); }, ErrorCode::kUNSUPPORTED,
               {"calling torch.FloatStorage is not supported", "REDUCE at byte 23"});
}

TEST(Pickle, RefusesBuildOnAPlainDict) {
  PickleBuilder p;
  p.proto().empty_dict().empty_dict().op('b').stop();
  expect_error([&] { read(p); }, ErrorCode::kUNSUPPORTED, {"BUILD at byte 4"});
}

TEST(Pickle, StackUnderflowIsCorrupt) {
  PickleBuilder p;
  p.proto().op('0').stop();
  expect_error([&] { read(p); }, ErrorCode::kCORRUPT_FILE, {"stack underflow", "POP at byte 2"});
}

TEST(Pickle, StackUnderflowAcrossAMarkIsCorrupt) {
  PickleBuilder p;
  p.proto().op(']').mark().integer(1).op('a').stop();  // APPEND may not reach below the MARK
  expect_error([&] { read(p); }, ErrorCode::kCORRUPT_FILE, {"stack underflow", "APPEND"});
}

TEST(Pickle, MissingMarkIsCorrupt) {
  PickleBuilder p;
  p.proto().integer(1).tuple().stop();
  expect_error([&] { read(p); }, ErrorCode::kCORRUPT_FILE, {"MARK missing", "TUPLE at byte 4"});
}

TEST(Pickle, StreamWithoutStopIsCorrupt) {
  PickleBuilder p;
  p.proto().empty_dict();
  expect_error([&] { read(p); }, ErrorCode::kCORRUPT_FILE, {"without STOP", "at byte 3"});
}

TEST(Pickle, TruncatedArgumentIsCorrupt) {
  PickleBuilder p;
  p.proto().op('X').le(10, 4).raw("abc");
  expect_error([&] { read(p); }, ErrorCode::kCORRUPT_FILE,
               {"10 bytes runs past the end", "BINUNICODE at byte 2"});
}

TEST(Pickle, HugeLengthIsCorrupt) {
  PickleBuilder p;
  p.proto().op(0x8d).le(uint64_t{1} << 63, 8).raw("abc").stop();
  expect_error([&] { read(p); }, ErrorCode::kCORRUPT_FILE,
               {"9223372036854775808 bytes runs past the end", "BINUNICODE8"});
}

TEST(Pickle, BadMemoIndexIsCorrupt) {
  PickleBuilder p;
  p.proto().binget(5).stop();
  expect_error([&] { read(p); }, ErrorCode::kCORRUPT_FILE,
               {"memo index 5 was never stored", "BINGET at byte 2"});
}

TEST(Pickle, DeepNestingHitsTheLimit) {
  PickleBuilder p;
  p.proto();
  for (int i = 0; i < 2000; ++i) p.mark();
  expect_error([&] { read(p); }, ErrorCode::kCORRUPT_FILE,
               {"more than 1024 nested MARKs", "MARK at byte 1026"});
}

TEST(Pickle, UnhashableKeyIsCorrupt) {
  PickleBuilder p;
  p.proto().empty_dict().op(']').none().setitem().stop();
  expect_error([&] { read(p); }, ErrorCode::kCORRUPT_FILE,
               {"unhashable", "list", "SETITEM at byte 5"});
}

TEST(Pickle, TupleKeyIsUnsupported) {
  PickleBuilder p;
  p.proto().empty_dict().op(')').none().setitem().stop();
  expect_error([&] { read(p); }, ErrorCode::kUNSUPPORTED, {"key of type tuple"});
}

TEST(Pickle, InvalidUtf8IsCorrupt) {
  PickleBuilder p;
  p.proto().str("\xc3\x28").stop();
  expect_error([&] { read(p); }, ErrorCode::kCORRUPT_FILE, {"not valid UTF-8"});
}

TEST(Pickle, UnknownByteIsCorruptAndTextOpcodesUnsupported) {
  PickleBuilder a, b;
  a.proto().op(0xff).stop();
  expect_error([&] { read(a); }, ErrorCode::kCORRUPT_FILE, {"\\xff is not a pickle opcode"});
  b.proto().op('I').raw("1\n").stop();
  expect_error([&] { read(b); }, ErrorCode::kUNSUPPORTED, {"opcode INT is not supported"});
}

TEST(Pickle, NewerProtocolIsUnsupported) {
  PickleBuilder p;
  p.proto(6).none().stop();
  expect_error([&] { read(p); }, ErrorCode::kUNSUPPORTED, {"pickle protocol 6"});
}

TEST(Pickle, IntegerPast64BitsIsUnsupported) {
  PickleBuilder p;
  p.proto().op(0x8a).le(9, 1).le(0, 8).le(1, 1).stop();  // 2^64
  expect_error([&] { read(p); }, ErrorCode::kUNSUPPORTED, {"does not fit in 64 bits"});
}

TEST(Pickle, ViewPastItsStorageIsCorrupt) {
  PickleBuilder p;
  p.proto().tensor("FloatStorage", "0", 6, 3, {2, 2}, {2, 1}).stop();  // reaches element 6
  expect_error([&] { read(p); }, ErrorCode::kCORRUPT_FILE,
               {"storage '0'", "reaches 28 bytes, the storage holds 24", "REDUCE"});
}

TEST(Pickle, OverflowingStrideIsCorrupt) {
  PickleBuilder p;
  p.proto().tensor("FloatStorage", "0", 6, 0, {3}, {int64_t{1} << 62}).stop();
  expect_error([&] { read(p); }, ErrorCode::kCORRUPT_FILE, {"past 2^63"});
}

TEST(Pickle, NegativeSizeIsCorrupt) {
  PickleBuilder p;
  p.proto().tensor("FloatStorage", "0", 6, 0, {-1}, {1}).stop();
  expect_error([&] { read(p); }, ErrorCode::kCORRUPT_FILE, {"size holds -1"});
}

TEST(Pickle, StorageLargerThanItsRecordIsCorrupt) {
  PickleBuilder p;
  p.proto().tensor("FloatStorage", "0", 7, 0, {7}, {1}).stop();
  expect_error(
      [&] { read(p); }, ErrorCode::kCORRUPT_FILE,
      {"storage '0'", "declares 7 elements of 4 bytes", "holds only 24 bytes", "BINPERSID"});
}

TEST(Pickle, MissingRecordComesFromTheResolver) {
  PickleBuilder p;
  p.proto().tensor("FloatStorage", "9", 1, 0, {1}, {1}).stop();
  expect_error([&] { read(p); }, ErrorCode::kCORRUPT_FILE, {"no record for storage '9'"});
}

TEST(Pickle, RebuildTensorV3TakesItsDtype) {
  Records r;
  r.add("0", bytes_of<uint8_t>({1, 2, 3, 4}));
  PickleBuilder p;
  p.proto().global("torch._utils", "_rebuild_tensor_v3").mark();
  p.mark().str("storage").global("torch.storage", "UntypedStorage").str("0").str("cpu");
  p.integer(4).tuple().op('Q').integer(1).int_tuple({2}).int_tuple({1}).boolean(false);
  p.ordered_dict().global("torch", "float8_e5m2").tuple().op('R').stop();
  const TorchState s = read(p, r);
  ASSERT_EQ(s.tensors.size(), 1u);
  EXPECT_EQ(s.tensors[0].dtype, ElementType::kF8_E5M2);
  EXPECT_EQ(static_cast<int>(s.tensors[0].data[0]), 2);
}

TEST(Pickle, UnsupportedElementTypeIsNamed) {
  PickleBuilder p;
  p.proto().tensor("ComplexFloatStorage", "0", 1, 0, {1}, {1}).stop();
  expect_error([&] { read(p); }, ErrorCode::kUNSUPPORTED,
               {"torch.ComplexFloatStorage: this element type is not supported"});
}

TEST(Pickle, TwoEntriesWithOneNameAreCorrupt) {
  // {"a.b": 1, "a": {"b": 2}}
  PickleBuilder p;
  p.proto().empty_dict().mark().str("a.b").integer(1).str("a").empty_dict().str("b");
  p.integer(2).setitem().setitems().stop();
  expect_error([&] { read(p); }, ErrorCode::kCORRUPT_FILE, {"'a.b': two entries"});
}

}  // namespace
}  // namespace bindery::io

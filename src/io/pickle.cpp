// The opcode loop of the restricted unpickler. It follows CPython's Lib/pickle.py
// (_Unpickler.load_*) opcode by opcode, with every read bounds-checked and every stack access
// checked against the innermost MARK, so that a hostile stream fails with an error instead of
// reading past the end, and runs in time and memory linear in its length.

#include "io/pickle.h"

#include <array>
#include <cstring>
#include <unordered_map>
#include <vector>

#include "io/pickle_globals.h"

namespace bindery::io {

namespace {

// Every opcode of pickle protocols 0-5 by name, so that refusals can say which one it was.
struct OpName {
  uint8_t op;
  std::string_view name;
};
// clang-format off
constexpr std::array<OpName, 68> kOPCODES{{
    {'(', "MARK"}, {'.', "STOP"}, {'0', "POP"}, {'1', "POP_MARK"},
    {'2', "DUP"}, {'F', "FLOAT"}, {'I', "INT"}, {'J', "BININT"},
    {'K', "BININT1"}, {'L', "LONG"}, {'M', "BININT2"}, {'N', "NONE"},
    {'P', "PERSID"}, {'Q', "BINPERSID"}, {'R', "REDUCE"}, {'S', "STRING"},
    {'T', "BINSTRING"}, {'U', "SHORT_BINSTRING"}, {'V', "UNICODE"}, {'X', "BINUNICODE"},
    {'a', "APPEND"}, {'b', "BUILD"}, {'c', "GLOBAL"}, {'d', "DICT"},
    {'}', "EMPTY_DICT"}, {'e', "APPENDS"}, {'g', "GET"}, {'h', "BINGET"},
    {'i', "INST"}, {'j', "LONG_BINGET"}, {'l', "LIST"}, {']', "EMPTY_LIST"},
    {'o', "OBJ"}, {'p', "PUT"}, {'q', "BINPUT"}, {'r', "LONG_BINPUT"},
    {'s', "SETITEM"}, {'t', "TUPLE"}, {')', "EMPTY_TUPLE"}, {'u', "SETITEMS"},
    {'G', "BINFLOAT"}, {0x80, "PROTO"}, {0x81, "NEWOBJ"}, {0x82, "EXT1"},
    {0x83, "EXT2"}, {0x84, "EXT4"}, {0x85, "TUPLE1"}, {0x86, "TUPLE2"},
    {0x87, "TUPLE3"}, {0x88, "NEWTRUE"}, {0x89, "NEWFALSE"}, {0x8a, "LONG1"},
    {0x8b, "LONG4"}, {'B', "BINBYTES"}, {'C', "SHORT_BINBYTES"}, {0x8c, "SHORT_BINUNICODE"},
    {0x8d, "BINUNICODE8"}, {0x8e, "BINBYTES8"}, {0x8f, "EMPTY_SET"}, {0x90, "ADDITEMS"},
    {0x91, "FROZENSET"}, {0x92, "NEWOBJ_EX"}, {0x93, "STACK_GLOBAL"}, {0x94, "MEMOIZE"},
    {0x95, "FRAME"}, {0x96, "BYTEARRAY8"}, {0x97, "NEXT_BUFFER"}, {0x98, "READONLY_BUFFER"}}};
// clang-format on

std::string_view opcode_name(uint8_t op) {
  for (const OpName& o : kOPCODES)
    if (o.op == op) return o.name;
  return "";
}

constexpr int kHIGHEST_PROTOCOL = 5;

// Strict UTF-8 (no overlongs, no surrogates, nothing past U+10FFFF).
bool valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t n = 0;
    uint32_t cp = 0, min = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xe0) == 0xc0) {
      n = 1, cp = c & 0x1f, min = 0x80;
    } else if ((c & 0xf0) == 0xe0) {
      n = 2, cp = c & 0x0f, min = 0x800;
    } else if ((c & 0xf8) == 0xf0) {
      n = 3, cp = c & 0x07, min = 0x10000;
    } else {
      return false;
    }
    if (s.size() - i <= n) return false;
    for (size_t k = 1; k <= n; ++k) {
      const auto d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xc0) != 0x80) return false;
      cp = cp << 6 | (d & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    i += n + 1;
  }
  return true;
}

class Unpickler {
 public:
  Unpickler(std::span<const std::byte> bytes, const StorageResolver& resolve,
            const std::string& origin, const UnpickleLimits& limits)
      : bytes_(bytes),
        resolve_(resolve),
        origin_(origin),
        limits_(limits),
        arena_(std::make_unique<PickleArena>()) {
    none_ = arena_->make(PickleKind::kNONE);
    true_ = arena_->make(PickleKind::kBOOL);
    true_->integer = 1;
    false_ = arena_->make(PickleKind::kBOOL);
  }

  Unpickled run();

 private:
  PickleSite site() const { return {origin_, op_offset_, name_}; }
  [[noreturn]] void fail(ErrorCode code, const std::string& what) const {
    pickle_fail(site(), code, what);
  }

  // ---- reading ----
  size_t left() const { return bytes_.size() - pos_; }
  const char* take(uint64_t n, const char* what) {
    if (n > left())
      fail(ErrorCode::kCORRUPT_FILE, std::string(what) + " of " + std::to_string(n) +
                                         " bytes runs past the end of the stream (" +
                                         std::to_string(left()) + " bytes left)");
    const char* p = reinterpret_cast<const char*>(bytes_.data() + pos_);
    pos_ += n;
    return p;
  }
  // Little-endian unsigned integer of n <= 8 bytes.
  uint64_t read_le(int n) {
    const auto* p = reinterpret_cast<const unsigned char*>(take(n, "the argument"));
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; --i) v = v << 8 | p[i];
    return v;
  }
  int64_t read_long(uint64_t n);
  std::string_view read_line();
  PickleValue* make_text(PickleKind kind, uint64_t n);

  // ---- stack ----
  size_t base() const { return marks_.empty() ? 0 : marks_.back(); }
  void push(PickleValue* v) {
    if (++pushes_ > limits_.max_pushes)
      fail(ErrorCode::kCORRUPT_FILE, "more than " + std::to_string(limits_.max_pushes) +
                                         " stack pushes: the stream exceeds the size limit");
    stack_.push_back(v);
  }
  void need(size_t n) const {
    const size_t have = stack_.size() - base();
    if (have < n)
      fail(ErrorCode::kCORRUPT_FILE, "stack underflow: needs " + std::to_string(n) + " item" +
                                         (n == 1 ? "" : "s") + " above the last MARK, found " +
                                         std::to_string(have));
  }
  PickleValue* pop() {
    need(1);
    PickleValue* v = stack_.back();
    stack_.pop_back();
    return v;
  }
  PickleValue* top() const {
    need(1);
    return stack_.back();
  }
  std::vector<PickleValue*> pop_mark() {
    if (marks_.empty()) fail(ErrorCode::kCORRUPT_FILE, "MARK missing: no MARK on the stack");
    std::vector<PickleValue*> items(stack_.begin() + static_cast<ptrdiff_t>(marks_.back()),
                                    stack_.end());
    stack_.resize(marks_.back());
    marks_.pop_back();
    return items;
  }
  PickleValue* target(PickleKind kind) const {
    PickleValue* t = top();
    if (t->kind != kind)
      fail(ErrorCode::kCORRUPT_FILE, std::string(name_) + " on a " +
                                         std::string(pickle_kind_name(t->kind)) + ", expected a " +
                                         std::string(pickle_kind_name(kind)));
    return t;
  }
  PickleValue* sequence(PickleKind kind, std::vector<PickleValue*> items) {
    PickleValue* v = arena_->make(kind);
    v->items = std::move(items);
    return v;
  }
  void set_item(PickleValue& dict, PickleValue* key, PickleValue* value) {
    if (!is_hashable_scalar(*key)) {
      const bool hashable = key->kind == PickleKind::kTUPLE || key->kind == PickleKind::kGLOBAL ||
                            key->kind == PickleKind::kTENSOR || key->kind == PickleKind::kSTORAGE;
      fail(hashable ? ErrorCode::kUNSUPPORTED : ErrorCode::kCORRUPT_FILE,
           std::string(hashable ? "a dict or set key of type " : "unhashable dict or set key: ") +
               std::string(pickle_kind_name(key->kind)) +
               (hashable ? " is not supported (None, bool, int, float, str, bytes are)" : ""));
    }
    dict.dict->set(key, value);
  }
  void set_items(PickleValue& dict, const std::vector<PickleValue*>& items) {
    if (items.size() % 2 != 0)
      fail(ErrorCode::kCORRUPT_FILE,
           "odd number of items (" + std::to_string(items.size()) + ") for key/value pairs");
    for (size_t i = 0; i < items.size(); i += 2) set_item(dict, items[i], items[i + 1]);
  }
  void memo_put(uint64_t index) { memo_[index] = top(); }
  void memo_get(uint64_t index) {
    const auto it = memo_.find(index);
    if (it == memo_.end())
      fail(ErrorCode::kCORRUPT_FILE, "memo index " + std::to_string(index) + " was never stored");
    push(it->second);
  }

  bool step();  // runs one opcode; false after STOP

  std::span<const std::byte> bytes_;
  const StorageResolver& resolve_;
  const std::string& origin_;
  UnpickleLimits limits_;
  std::unique_ptr<PickleArena> arena_;
  PickleValue* none_;
  PickleValue* true_;
  PickleValue* false_;
  size_t pos_ = 0;
  size_t op_offset_ = 0;
  std::string_view name_ = "start";
  std::vector<PickleValue*> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, PickleValue*> memo_;
  size_t pushes_ = 0;
  PickleValue* result_ = nullptr;
};

// LONG1 / LONG4: n bytes, little-endian two's complement; values past 64 bits are refused.
int64_t Unpickler::read_long(uint64_t n) {
  const auto* p = reinterpret_cast<const unsigned char*>(take(n, "the integer"));
  if (n == 0) return 0;
  const unsigned char sign = (p[n - 1] & 0x80) ? 0xff : 0x00;
  for (uint64_t i = 8; i < n; ++i)
    if (p[i] != sign || (p[7] & 0x80) != (sign & 0x80))
      fail(ErrorCode::kUNSUPPORTED,
           "an integer of " + std::to_string(n) + " bytes does not fit in 64 bits");
  uint64_t v = 0;
  for (uint64_t i = 0; i < 8; ++i) v |= uint64_t{i < n ? p[i] : sign} << (8 * i);
  return static_cast<int64_t>(v);
}

std::string_view Unpickler::read_line() {
  const auto* begin = reinterpret_cast<const char*>(bytes_.data() + pos_);
  const void* nl = std::memchr(begin, '\n', left());
  if (!nl) fail(ErrorCode::kCORRUPT_FILE, "a line without its newline runs past the end");
  const size_t n = static_cast<size_t>(static_cast<const char*>(nl) - begin);
  pos_ += n + 1;
  return {begin, n};
}

PickleValue* Unpickler::make_text(PickleKind kind, uint64_t n) {
  const char* p = take(n, kind == PickleKind::kSTRING ? "a string" : "a bytes object");
  PickleValue* v = arena_->make(kind);
  v->text.assign(p, n);
  if (kind == PickleKind::kSTRING && !valid_utf8(v->text))
    fail(ErrorCode::kCORRUPT_FILE,
         "a string that is not valid UTF-8: '" + printable(v->text) + "'");
  return v;
}

bool Unpickler::step() {
  if (left() == 0) {
    op_offset_ = pos_;
    name_ = "end";
    fail(ErrorCode::kCORRUPT_FILE, "the stream ends without STOP (truncated)");
  }
  op_offset_ = pos_;
  const auto op = static_cast<uint8_t>(bytes_[pos_++]);
  name_ = opcode_name(op);
  switch (op) {
    case 0x80: {  // PROTO
      const uint64_t v = read_le(1);
      if (v > kHIGHEST_PROTOCOL)
        fail(ErrorCode::kUNSUPPORTED, "pickle protocol " + std::to_string(v) +
                                          ", this reader knows protocols up to " +
                                          std::to_string(kHIGHEST_PROTOCOL));
      break;
    }
    case 0x95: {  // FRAME: only a length hint for buffering, but it must fit
      const uint64_t n = read_le(8);
      if (n > left())
        fail(ErrorCode::kCORRUPT_FILE, "a frame of " + std::to_string(n) +
                                           " bytes runs past the end of the stream (" +
                                           std::to_string(left()) + " bytes left)");
      break;
    }
    case '.': result_ = pop(); return false;  // STOP
    case '(':                                 // MARK
      if (marks_.size() >= limits_.max_mark_depth)
        fail(ErrorCode::kCORRUPT_FILE, "more than " + std::to_string(limits_.max_mark_depth) +
                                           " nested MARKs: nesting exceeds the limit");
      marks_.push_back(stack_.size());
      break;
    case '0':  // POP: like pickle.py, an empty frame pops its MARK instead
      if (stack_.size() > base() || marks_.empty()) {
        pop();
      } else {
        pop_mark();
      }
      break;
    case '1': pop_mark(); break;   // POP_MARK
    case '2': push(top()); break;  // DUP
    case '}': push(arena_->make(PickleKind::kDICT)); break;
    case ']': push(arena_->make(PickleKind::kLIST)); break;
    case ')': push(arena_->make(PickleKind::kTUPLE)); break;
    case 0x8f: push(arena_->make(PickleKind::kSET)); break;
    case 't': push(sequence(PickleKind::kTUPLE, pop_mark())); break;
    case 'l': push(sequence(PickleKind::kLIST, pop_mark())); break;
    case 0x85:
    case 0x86:
    case 0x87: {  // TUPLE1-3
      const size_t n = op - 0x84u;
      need(n);
      std::vector<PickleValue*> items(stack_.end() - static_cast<ptrdiff_t>(n), stack_.end());
      stack_.resize(stack_.size() - n);
      push(sequence(PickleKind::kTUPLE, std::move(items)));
      break;
    }
    case 'd': {  // DICT
      const std::vector<PickleValue*> items = pop_mark();
      PickleValue* d = arena_->make(PickleKind::kDICT);
      set_items(*d, items);
      push(d);
      break;
    }
    case 0x91: {  // FROZENSET
      const std::vector<PickleValue*> items = pop_mark();
      PickleValue* s = arena_->make(PickleKind::kSET);
      for (PickleValue* x : items) set_item(*s, x, nullptr);
      push(s);
      break;
    }
    case 'a': {  // APPEND
      PickleValue* x = pop();
      target(PickleKind::kLIST)->items.push_back(x);
      break;
    }
    case 'e': {  // APPENDS
      const std::vector<PickleValue*> items = pop_mark();
      std::vector<PickleValue*>& list = target(PickleKind::kLIST)->items;
      list.insert(list.end(), items.begin(), items.end());
      break;
    }
    case 's': {  // SETITEM
      PickleValue* value = pop();
      PickleValue* key = pop();
      set_item(*target(PickleKind::kDICT), key, value);
      break;
    }
    case 'u': {  // SETITEMS
      const std::vector<PickleValue*> items = pop_mark();
      set_items(*target(PickleKind::kDICT), items);
      break;
    }
    case 0x90: {  // ADDITEMS
      const std::vector<PickleValue*> items = pop_mark();
      PickleValue* s = target(PickleKind::kSET);
      for (PickleValue* x : items) set_item(*s, x, nullptr);
      break;
    }
    case 'N': push(none_); break;
    case 0x88: push(true_); break;
    case 0x89: push(false_); break;
    case 'J':
    case 'K':
    case 'M': {  // BININT (signed 32), BININT1, BININT2 (unsigned)
      PickleValue* v = arena_->make(PickleKind::kINT);
      if (op == 'J') v->integer = static_cast<int32_t>(static_cast<uint32_t>(read_le(4)));
      if (op != 'J') v->integer = static_cast<int64_t>(read_le(op == 'K' ? 1 : 2));
      push(v);
      break;
    }
    case 0x8a:
    case 0x8b: {  // LONG1, LONG4
      const uint64_t n = op == 0x8a ? read_le(1) : read_le(4);
      if (op == 0x8b && n > 0x7fffffffu)
        fail(ErrorCode::kCORRUPT_FILE, "negative length " + std::to_string(int32_t(n)));
      PickleValue* v = arena_->make(PickleKind::kINT);
      v->integer = read_long(n);
      push(v);
      break;
    }
    case 'G': {  // BINFLOAT: big-endian IEEE double
      const auto* p = reinterpret_cast<const unsigned char*>(take(8, "the float"));
      uint64_t bits = 0;
      for (int i = 0; i < 8; ++i) bits = bits << 8 | p[i];
      PickleValue* v = arena_->make(PickleKind::kFLOAT);
      std::memcpy(&v->real, &bits, sizeof bits);
      push(v);
      break;
    }
    case 'X': push(make_text(PickleKind::kSTRING, read_le(4))); break;  // BINUNICODE
    case 0x8c: push(make_text(PickleKind::kSTRING, read_le(1))); break;
    case 0x8d: push(make_text(PickleKind::kSTRING, read_le(8))); break;
    case 'U': push(make_text(PickleKind::kSTRING, read_le(1))); break;  // SHORT_BINSTRING
    case 'T': {  // BINSTRING: signed 32-bit length; torch.load decodes it as UTF-8
      const uint64_t n = read_le(4);
      if (n > 0x7fffffffu)
        fail(ErrorCode::kCORRUPT_FILE, "negative length " + std::to_string(int32_t(n)));
      push(make_text(PickleKind::kSTRING, n));
      break;
    }
    case 'B': push(make_text(PickleKind::kBYTES, read_le(4))); break;  // BINBYTES
    case 'C': push(make_text(PickleKind::kBYTES, read_le(1))); break;
    case 0x8e: push(make_text(PickleKind::kBYTES, read_le(8))); break;
    case 'c': {  // GLOBAL "module\nname\n"
      const std::string_view module = read_line();
      const std::string_view name = read_line();
      push(find_global(*arena_, module, name, site()));
      break;
    }
    case 0x93: {  // STACK_GLOBAL
      PickleValue* name = pop();
      PickleValue* module = pop();
      if (module->kind != PickleKind::kSTRING || name->kind != PickleKind::kSTRING)
        fail(ErrorCode::kCORRUPT_FILE,
             "module and name are " + std::string(pickle_kind_name(module->kind)) + " and " +
                 std::string(pickle_kind_name(name->kind)) + ", expected strings");
      push(find_global(*arena_, module->text, name->text, site()));
      break;
    }
    case 'R': {  // REDUCE
      PickleValue* args = pop();
      PickleValue* callable = pop();
      push(call_global(*arena_, *callable, *args, limits_, site()));
      break;
    }
    case 0x81: {  // NEWOBJ
      PickleValue* args = pop();
      PickleValue* cls = pop();
      push(new_object(*arena_, *cls, *args, site()));
      break;
    }
    case 'b': {  // BUILD
      PickleValue* state = pop();
      build_object(*top(), *state, site());
      break;
    }
    case 'Q': {  // BINPERSID
      PickleValue* pid = pop();
      push(persistent_load(*arena_, *pid, resolve_, site()));
      break;
    }
    case 'q': memo_put(read_le(1)); break;     // BINPUT
    case 'r': memo_put(read_le(4)); break;     // LONG_BINPUT
    case 0x94: memo_put(memo_.size()); break;  // MEMOIZE
    case 'h': memo_get(read_le(1)); break;     // BINGET
    case 'j': memo_get(read_le(4)); break;     // LONG_BINGET
    default:
      if (!name_.empty())
        fail(ErrorCode::kUNSUPPORTED,
             "opcode " + std::string(name_) + " is not supported by this restricted unpickler");
      name_ = "?";
      fail(ErrorCode::kCORRUPT_FILE,
           "byte " + printable(std::string(1, char(op))) + " is not a pickle opcode");
  }
  if (arena_->size() > limits_.max_values)
    fail(ErrorCode::kCORRUPT_FILE, "more than " + std::to_string(limits_.max_values) +
                                       " values: the stream exceeds the size limit");
  return true;
}

Unpickled Unpickler::run() {
  while (step()) {
  }
  return {std::move(arena_), result_};
}

}  // namespace

Unpickled unpickle(std::span<const std::byte> bytes, const StorageResolver& resolve,
                   const std::string& origin, const UnpickleLimits& limits) {
  return Unpickler(bytes, resolve, origin, limits).run();
}

}  // namespace bindery::io

#pragma once
// Test helpers for the torch checkpoint reader: a builder of pickle byte streams (opcode by
// opcode, the way torch.save's protocol-2 output looks) and a minimal zip writer with control
// over what hostile archives get wrong (data descriptors, deflate, local headers, alignment).

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

#include "bindery/error.h"

namespace bindery::io::torch_test {

using Bytes = std::vector<std::byte>;

inline Bytes to_bytes(std::string_view s) {
  Bytes b(s.size());
  for (size_t i = 0; i < s.size(); ++i) b[i] = static_cast<std::byte>(s[i]);
  return b;
}

template <class T>
Bytes bytes_of(std::initializer_list<T> values) {
  Bytes b(values.size() * sizeof(T));
  size_t at = 0;
  for (const T& v : values) {
    std::memcpy(b.data() + at, &v, sizeof v);
    at += sizeof v;
  }
  return b;
}

inline void put_le(Bytes& b, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) b.push_back(static_cast<std::byte>(v >> (8 * i)));
}

/// Runs `f`, expects a bindery::Error with `code` whose message contains every `needles`.
template <class F>
void expect_error(F&& f, ErrorCode code, std::initializer_list<std::string_view> needles) {
  try {
    f();
    ADD_FAILURE() << "no error, expected " << error_code_name(code);
  } catch (const Error& e) {
    EXPECT_EQ(error_code_name(e.code()), error_code_name(code)) << e.what();
    for (const std::string_view n : needles)
      EXPECT_NE(std::string(e.what()).find(n), std::string::npos)
          << "'" << n << "' not in: " << e.what();
  }
}

class PickleBuilder {
 public:
  PickleBuilder& op(uint8_t b) {
    out_.push_back(static_cast<std::byte>(b));
    return *this;
  }
  PickleBuilder& raw(std::string_view s) {
    for (const char c : s) out_.push_back(static_cast<std::byte>(c));
    return *this;
  }
  PickleBuilder& le(uint64_t v, int n) {
    put_le(out_, v, n);
    return *this;
  }
  PickleBuilder& proto(int v = 2) { return op(0x80).le(static_cast<uint64_t>(v), 1); }
  PickleBuilder& str(std::string_view s) { return op('X').le(s.size(), 4).raw(s); }
  PickleBuilder& short_str(std::string_view s) { return op(0x8c).le(s.size(), 1).raw(s); }
  PickleBuilder& integer(int64_t v) {
    if (v >= 0 && v < 256) return op('K').le(static_cast<uint64_t>(v), 1);
    if (v >= 0 && v < 65536) return op('M').le(static_cast<uint64_t>(v), 2);
    if (v >= INT32_MIN && v <= INT32_MAX) return op('J').le(static_cast<uint32_t>(v), 4);
    return op(0x8a).le(8, 1).le(static_cast<uint64_t>(v), 8);  // LONG1
  }
  PickleBuilder& none() { return op('N'); }
  PickleBuilder& boolean(bool b) { return op(b ? 0x88 : 0x89); }
  PickleBuilder& mark() { return op('('); }
  PickleBuilder& tuple() { return op('t'); }
  PickleBuilder& global(std::string_view module, std::string_view name) {
    return op('c').raw(module).raw("\n").raw(name).raw("\n");
  }
  PickleBuilder& stack_global(std::string_view module, std::string_view name) {
    return short_str(module).short_str(name).op(0x93);
  }
  PickleBuilder& int_tuple(std::initializer_list<int64_t> v) {
    mark();
    for (const int64_t x : v) integer(x);
    return tuple();
  }
  PickleBuilder& empty_dict() { return op('}'); }
  PickleBuilder& ordered_dict() { return global("collections", "OrderedDict").op(')').op('R'); }
  PickleBuilder& setitem() { return op('s'); }
  PickleBuilder& setitems() { return op('u'); }
  PickleBuilder& binput(uint8_t i) { return op('q').le(i, 1); }
  PickleBuilder& binget(uint8_t i) { return op('h').le(i, 1); }
  /// ('storage', torch.<type>, key, 'cpu', numel) then BINPERSID.
  PickleBuilder& storage(std::string_view type, std::string_view key, int64_t numel) {
    mark().str("storage").global("torch", type).str(key).str("cpu").integer(numel).tuple();
    return op('Q');
  }
  /// _rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict()).
  PickleBuilder& tensor(std::string_view type, std::string_view key, int64_t numel, int64_t offset,
                        std::initializer_list<int64_t> size,
                        std::initializer_list<int64_t> stride) {
    global("torch._utils", "_rebuild_tensor_v2").mark();
    storage(type, key, numel).integer(offset).int_tuple(size).int_tuple(stride);
    return boolean(false).ordered_dict().tuple().op('R');
  }
  PickleBuilder& stop() { return op('.'); }
  const Bytes& bytes() const { return out_; }

 private:
  Bytes out_;
};

inline uint32_t crc32(const Bytes& b) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  uint32_t c = 0xffffffffu;
  for (const std::byte x : b) c = table[(c ^ static_cast<uint8_t>(x)) & 0xff] ^ (c >> 8);
  return c ^ 0xffffffffu;
}

/// What ZipWriter::add may get wrong on purpose.
struct ZipEntryOptions {
  bool deflate = false;
  bool descriptor = false;
  uint16_t method = 0xffff;     // override the method field (0xffff: from `deflate`)
  int64_t central_size = -1;    // override the sizes the central directory states
  int64_t central_usize = -1;   // override only its uncompressed size
  int64_t local_size = -1;      // override the sizes in the local header
  uint32_t crc_xor = 0;         // damage the CRC everywhere
  uint16_t flags = 0;           // extra general-purpose flags (1: encrypted)
  std::string local_name = "";  // a different name in the local header
};

/// A zip archive in memory. Entries are stored (method 0) or "deflated" with deflate's stored
/// blocks (valid deflate that needs no zlib here), optionally with a data descriptor as torch
/// writes them, and 64-byte aligned data as torch does (padding in an extra field).
class ZipWriter {
 public:
  using Options = ZipEntryOptions;

  void add(const std::string& name, const Bytes& data, const Options& o = {}) {
    Bytes payload = o.deflate ? deflate_stored(data) : data;
    const uint16_t method = o.method != 0xffff ? o.method : (o.deflate ? 8 : 0);
    const uint16_t flags = static_cast<uint16_t>((o.descriptor ? 8 : 0) | o.flags);
    const uint32_t crc = crc32(data) ^ o.crc_xor;
    const std::string& lname = o.local_name.empty() ? name : o.local_name;
    const uint64_t header_at = out_.size();
    size_t extra = 0;  // pad the data to 64 bytes: an extra field of >= 4 bytes
    while ((header_at + 30 + lname.size() + extra) % 64 != 0 || (extra != 0 && extra < 4)) ++extra;
    const uint64_t csize = o.central_size >= 0 ? uint64_t(o.central_size) : payload.size();
    const uint64_t usize = o.central_usize >= 0  ? uint64_t(o.central_usize)
                           : o.central_size >= 0 ? uint64_t(o.central_size)
                                                 : data.size();
    const uint64_t lc = o.local_size >= 0 ? uint64_t(o.local_size) : (o.descriptor ? 0 : csize);
    const uint64_t lu = o.local_size >= 0 ? uint64_t(o.local_size) : (o.descriptor ? 0 : usize);
    put_le(out_, 0x04034b50, 4);
    put_le(out_, 20, 2);
    put_le(out_, flags, 2);
    put_le(out_, method, 2);
    put_le(out_, 0, 2);     // time
    put_le(out_, 0x21, 2);  // date 1980-01-01
    put_le(out_, o.descriptor ? 0 : crc, 4);
    put_le(out_, lc, 4);
    put_le(out_, lu, 4);
    put_le(out_, lname.size(), 2);
    put_le(out_, extra, 2);
    for (const char c : lname) out_.push_back(static_cast<std::byte>(c));
    if (extra > 0) {
      put_le(out_, 0x4246, 2);  // "FB", as torch pads
      put_le(out_, extra - 4, 2);
      out_.resize(out_.size() + extra - 4, std::byte{'Z'});
    }
    out_.insert(out_.end(), payload.begin(), payload.end());
    if (o.descriptor) {
      put_le(out_, 0x08074b50, 4);
      put_le(out_, crc, 4);
      put_le(out_, payload.size(), 4);
      put_le(out_, data.size(), 4);
    }
    put_le(central_, 0x02014b50, 4);
    put_le(central_, 20, 2);
    put_le(central_, 20, 2);
    put_le(central_, flags, 2);
    put_le(central_, method, 2);
    put_le(central_, 0, 2);
    put_le(central_, 0x21, 2);
    put_le(central_, crc, 4);
    put_le(central_, csize, 4);
    put_le(central_, usize, 4);
    put_le(central_, name.size(), 2);
    put_le(central_, 0, 2);  // extra
    put_le(central_, 0, 2);  // comment
    put_le(central_, 0, 2);  // disk
    put_le(central_, 0, 2);  // internal attributes
    put_le(central_, 0, 4);  // external attributes
    put_le(central_, header_at, 4);
    for (const char c : name) central_.push_back(static_cast<std::byte>(c));
    ++count_;
  }
  /// Offset of the next entry's local header (where the previous one ended).
  size_t size() const { return out_.size(); }

  /// The archive; `claimed_entries` overrides the entry count of the end record.
  Bytes finish(int claimed_entries = -1) const {
    Bytes b = out_;
    const uint64_t cd_at = b.size();
    b.insert(b.end(), central_.begin(), central_.end());
    const uint64_t n = claimed_entries >= 0 ? uint64_t(claimed_entries) : count_;
    put_le(b, 0x06054b50, 4);
    put_le(b, 0, 2);
    put_le(b, 0, 2);
    put_le(b, n, 2);
    put_le(b, n, 2);
    put_le(b, central_.size(), 4);
    put_le(b, cd_at, 4);
    put_le(b, 0, 2);
    return b;
  }

  /// Deflate made of stored blocks (BTYPE 00): valid input for any inflater.
  static Bytes deflate_stored(const Bytes& data) {
    Bytes out;
    size_t at = 0;
    do {
      const size_t n = std::min<size_t>(65535, data.size() - at);
      const bool last = at + n == data.size();
      out.push_back(std::byte{last ? uint8_t{1} : uint8_t{0}});
      put_le(out, n, 2);
      put_le(out, ~n & 0xffff, 2);
      out.insert(out.end(), data.begin() + static_cast<ptrdiff_t>(at),
                 data.begin() + static_cast<ptrdiff_t>(at + n));
      at += n;
    } while (at < data.size());
    return out;
  }

 private:
  Bytes out_;
  Bytes central_;
  uint64_t count_ = 0;
};

}  // namespace bindery::io::torch_test

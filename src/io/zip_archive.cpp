// The zip reader. The layout (APPNOTE.TXT 4.3): local header + data [+ data descriptor] per
// entry, then the central directory, then [zip64 end record + its locator], then the end of
// central directory record. Only what torch.save archives need is read: one disk, stored or
// deflated entries, zip64 sizes and offsets (every checkpoint shard over 4 GiB has them).
//
// We parse the directory ourselves rather than through minizip: Debian's minizip 1.1 compares
// 64-bit sizes against (unsigned long)-1 when it reads zip64 extra fields, so on LP64 every
// entry over 4 GiB, and every entry after one, comes out with sizes and offsets of 0xFFFFFFFF.
// libzip reads zip64 but gives no access to where an entry's data lies in the file, and
// stored records must be zero-copy views of the mapped archive (tensors are gigabytes).
// Inflation and CRC-32 are zlib's.

#include "io/zip_archive.h"

#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <new>
#include <unordered_map>
#include <utility>

#include "bindery/error.h"

namespace bindery::io {

namespace {

constexpr uint32_t kEND_MAGIC = 0x06054b50;
constexpr uint32_t kZIP64_END_MAGIC = 0x06064b50;
constexpr uint32_t kZIP64_LOCATOR_MAGIC = 0x07064b50;
constexpr uint32_t kCENTRAL_MAGIC = 0x02014b50;
constexpr uint32_t kLOCAL_MAGIC = 0x04034b50;
constexpr uint32_t kDESCRIPTOR_MAGIC = 0x08074b50;
constexpr size_t kEND_SIZE = 22;
constexpr size_t kZIP64_END_SIZE = 56;
constexpr size_t kZIP64_LOCATOR_SIZE = 20;
constexpr size_t kCENTRAL_SIZE = 46;
constexpr size_t kLOCAL_SIZE = 30;
constexpr uint64_t kDEFLATE_MAX_RATIO = 1032;  // deflate's limit: 258 bytes from 2 bits
constexpr uint64_t k32 = 0xffffffffu;
constexpr uint16_t kSTORED = 0;
constexpr uint16_t kDEFLATED = 8;

uint64_t get_le(const std::byte* p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = v << 8 | static_cast<uint64_t>(p[i]);
  return v;
}

// The zip64 extended information extra field (id 1) of a header: in this order, the 8-byte
// values of the fields that hold 0xFFFFFFFF. False if the field is absent or too short.
bool read_zip64(const std::byte* extra, size_t size, std::initializer_list<uint64_t*> fields) {
  for (size_t at = 0; at + 4 <= size;) {
    const uint64_t id = get_le(extra + at, 2), len = get_le(extra + at + 2, 2);
    if (at + 4 + len > size) return false;
    if (id == 1) {
      size_t p = at + 4;
      for (uint64_t* f : fields) {
        if (*f != k32) continue;
        if (p + 8 > at + 4 + len) return false;
        *f = get_le(extra + p, 8);
        p += 8;
      }
      return true;
    }
    at += 4 + len;
  }
  return false;
}

uint32_t crc32_of(const std::byte* p, uint64_t n) {
  uLong crc = crc32(0, Z_NULL, 0);
  while (n > 0) {
    const uInt chunk = static_cast<uInt>(std::min<uint64_t>(n, 1u << 30));
    crc = crc32(crc, reinterpret_cast<const Bytef*>(p), chunk);
    p += chunk;
    n -= chunk;
  }
  return static_cast<uint32_t>(crc);
}

}  // namespace

struct ZipArchive::Impl {
  std::span<const std::byte> bytes;
  std::string origin;
  std::vector<ZipEntry> entries;
  std::vector<uint64_t> local_offsets;  // of each entry's local header
  std::unordered_map<std::string, size_t> index;

  [[noreturn]] void fail_archive(const std::string& what) const {
    throw Error(ErrorCode::kCORRUPT_FILE, origin + ": " + what);
  }
  [[noreturn]] void fail(ErrorCode code, const ZipEntry& e, const std::string& what) const {
    throw Error(code, origin + ": zip entry '" + e.name + "': " + what);
  }
  void read_directory();
  // Checks entry i's local header against the directory; returns the offset of its data.
  uint64_t locate(size_t i) const;
  // Entry i's bytes, inflated if deflated, size-capped and CRC-checked.
  std::unique_ptr<std::byte[]> read(size_t i, uint64_t max_size) const;
};

void ZipArchive::Impl::read_directory() {
  const std::byte* b = bytes.data();
  const uint64_t n = bytes.size();
  // 1. The end record: the last signature within 64 KiB (its comment) of the end.
  uint64_t end = UINT64_MAX;
  for (uint64_t at = n >= kEND_SIZE ? n - kEND_SIZE + 1 : 0;
       at-- > 0 && n - at <= kEND_SIZE + 65535;)
    if (get_le(b + at, 4) == kEND_MAGIC && at + kEND_SIZE + get_le(b + at + 20, 2) <= n) {
      end = at;
      break;
    }
  if (end == UINT64_MAX) {
    const bool pk = n >= 2 && b[0] == std::byte{'P'} && b[1] == std::byte{'K'};
    fail_archive(std::string("not a zip archive") +
                 (n == 0 ? " (the file is empty)"
                  : pk   ? " (it starts like one, but its end of central directory record is "
                           "missing or damaged)"
                         : " (no end of central directory record)"));
  }
  const std::byte* e = b + end;
  uint64_t disk = get_le(e + 4, 2), cd_disk = get_le(e + 6, 2);
  uint64_t disk_entries = get_le(e + 8, 2), count = get_le(e + 10, 2);
  uint64_t cd_size = get_le(e + 12, 4), cd_offset = get_le(e + 16, 4);
  uint64_t cd_end_limit = end;  // the directory ends before the (zip64) end record
  // 2. zip64: a locator right before the end record points at the zip64 end record.
  if (end >= kZIP64_LOCATOR_SIZE && get_le(e - kZIP64_LOCATOR_SIZE, 4) == kZIP64_LOCATOR_MAGIC) {
    const std::byte* l = e - kZIP64_LOCATOR_SIZE;
    const uint64_t z = get_le(l + 8, 8);
    if (z > end - kZIP64_LOCATOR_SIZE || end - kZIP64_LOCATOR_SIZE - z < kZIP64_END_SIZE ||
        get_le(b + z, 4) != kZIP64_END_MAGIC)
      fail_archive("damaged zip64 end of central directory record");
    disk = get_le(b + z + 16, 4);
    cd_disk = get_le(b + z + 20, 4);
    disk_entries = get_le(b + z + 24, 8);
    count = get_le(b + z + 32, 8);
    cd_size = get_le(b + z + 40, 8);
    cd_offset = get_le(b + z + 48, 8);
    cd_end_limit = z;
  }
  if (disk != 0 || cd_disk != 0 || disk_entries != count)
    throw Error(ErrorCode::kUNSUPPORTED, origin + ": multi-disk zip archives are not supported");
  if (cd_offset > cd_end_limit || cd_size > cd_end_limit - cd_offset)
    fail_archive("the zip central directory (" + std::to_string(cd_size) + " bytes at offset " +
                 std::to_string(cd_offset) + ") does not lie before its end record at " +
                 std::to_string(cd_end_limit));
  if (count > cd_size / kCENTRAL_SIZE)
    fail_archive("the zip end record claims " + std::to_string(count) + " entries, the " +
                 std::to_string(cd_size) + "-byte central directory has room for at most " +
                 std::to_string(cd_size / kCENTRAL_SIZE));
  // 3. The entries.
  entries.reserve(count);
  uint64_t at = cd_offset;
  const uint64_t cd_end = cd_offset + cd_size;
  for (uint64_t i = 0; i < count; ++i) {
    const std::string where = origin + ": zip central directory entry " + std::to_string(i);
    if (cd_end - at < kCENTRAL_SIZE || get_le(b + at, 4) != kCENTRAL_MAGIC)
      fail_archive("zip central directory entry " + std::to_string(i) + " is damaged or missing");
    const std::byte* c = b + at;
    const uint64_t flags = get_le(c + 8, 2), name_len = get_le(c + 28, 2);
    const uint64_t extra_len = get_le(c + 30, 2), comment_len = get_le(c + 32, 2);
    if (cd_end - at - kCENTRAL_SIZE < name_len + extra_len + comment_len)
      fail_archive("zip central directory entry " + std::to_string(i) + " runs past the directory");
    ZipEntry z;
    z.name.assign(reinterpret_cast<const char*>(c + kCENTRAL_SIZE), name_len);
    z.method = static_cast<uint16_t>(get_le(c + 10, 2));
    z.crc32 = static_cast<uint32_t>(get_le(c + 16, 4));
    z.compressed_size = get_le(c + 20, 4);
    z.size = get_le(c + 24, 4);
    uint64_t local = get_le(c + 42, 4), entry_disk = get_le(c + 34, 2);
    if ((z.size == k32 || z.compressed_size == k32 || local == k32) &&
        !read_zip64(c + kCENTRAL_SIZE + name_len, extra_len, {&z.size, &z.compressed_size, &local}))
      fail_archive("zip central directory entry " + std::to_string(i) + " ('" + z.name +
                   "') lacks its zip64 sizes");
    if (z.name.find('\0') != std::string::npos)
      fail_archive("zip central directory entry " + std::to_string(i) + " has a NUL in its name");
    if (flags & 1) throw Error(ErrorCode::kUNSUPPORTED, where + " ('" + z.name + "') is encrypted");
    if (entry_disk != 0) throw Error(ErrorCode::kUNSUPPORTED, where + " lies on another disk");
    if (!index.emplace(z.name, entries.size()).second)
      fail_archive("zip entry '" + z.name + "' appears twice");
    entries.push_back(std::move(z));
    local_offsets.push_back(local);
    at += kCENTRAL_SIZE + name_len + extra_len + comment_len;
  }
}

uint64_t ZipArchive::Impl::locate(size_t i) const {
  const ZipEntry& e = entries.at(i);
  if (e.method != kSTORED && e.method != kDEFLATED)
    fail(ErrorCode::kUNSUPPORTED, e,
         "compression method " + std::to_string(e.method) + " (only stored and deflated are read)");
  const uint64_t n = bytes.size(), at = local_offsets[i];
  if (at > n || n - at < kLOCAL_SIZE || get_le(bytes.data() + at, 4) != kLOCAL_MAGIC)
    fail(ErrorCode::kCORRUPT_FILE, e,
         "no local header at offset " + std::to_string(at) + " (the archive has " +
             std::to_string(n) + " bytes)");
  const std::byte* h = bytes.data() + at;
  const uint64_t name_len = get_le(h + 26, 2), extra_len = get_le(h + 28, 2);
  const uint64_t data_pos = at + kLOCAL_SIZE + name_len + extra_len;
  if (data_pos > n || e.compressed_size > n - data_pos)
    fail(ErrorCode::kCORRUPT_FILE, e,
         std::to_string(e.compressed_size) + " bytes at offset " + std::to_string(data_pos) +
             " run past the end of the archive (" + std::to_string(n) + " bytes)");
  if (name_len != e.name.size() || std::memcmp(h + kLOCAL_SIZE, e.name.data(), name_len) != 0)
    fail(ErrorCode::kCORRUPT_FILE, e, "the local header names another entry");
  if (get_le(h + 8, 2) != e.method)
    fail(ErrorCode::kCORRUPT_FILE, e, "the local header names another compression method");
  // Sizes and CRC: in the local header, or (flag 8, as torch writes) zeros there and the true
  // values in a data descriptor after the data.
  const uint64_t flags = get_le(h + 6, 2), crc = get_le(h + 14, 4);
  uint64_t size = get_le(h + 22, 4), csize = get_le(h + 18, 4);
  if ((size == k32 || csize == k32) &&
      !read_zip64(h + kLOCAL_SIZE + name_len, extra_len, {&size, &csize}))
    fail(ErrorCode::kCORRUPT_FILE, e, "the local header lacks its zip64 sizes");
  const auto agrees = [&](uint64_t v, uint64_t central) {
    return v == central || ((flags & 8) != 0 && v == 0);
  };
  if (!agrees(crc, e.crc32) || !agrees(csize, e.compressed_size) || !agrees(size, e.size))
    fail(ErrorCode::kCORRUPT_FILE, e,
         "the local header says " + std::to_string(csize) + " bytes (" + std::to_string(size) +
             " uncompressed), the central directory " + std::to_string(e.compressed_size) + " (" +
             std::to_string(e.size) + ")");
  if ((flags & 8) == 0) return data_pos;
  // The descriptor: [signature] crc, then 4-byte or (zip64) 8-byte sizes.
  uint64_t d = data_pos + e.compressed_size;
  if (n - d >= 4 && get_le(bytes.data() + d, 4) == kDESCRIPTOR_MAGIC) d += 4;
  const std::byte* p = bytes.data() + d;
  const bool crc_ok = n - d >= 4 && get_le(p, 4) == e.crc32;
  const bool ok32 =
      crc_ok && n - d >= 12 && get_le(p + 4, 4) == e.compressed_size && get_le(p + 8, 4) == e.size;
  const bool ok64 =
      crc_ok && n - d >= 20 && get_le(p + 4, 8) == e.compressed_size && get_le(p + 12, 8) == e.size;
  if (!ok32 && !ok64)
    fail(ErrorCode::kCORRUPT_FILE, e,
         "the data descriptor after the data is missing or disagrees with the central "
         "directory");
  return data_pos;
}

std::unique_ptr<std::byte[]> ZipArchive::Impl::read(size_t i, uint64_t max_size) const {
  const ZipEntry& e = entries.at(i);
  if (e.size > max_size)
    fail(ErrorCode::kCORRUPT_FILE, e,
         std::to_string(e.size) + " bytes, more than the limit of " + std::to_string(max_size));
  if (e.method == kSTORED && e.compressed_size != e.size)
    fail(ErrorCode::kCORRUPT_FILE, e,
         "stored (uncompressed) but its sizes differ: " + std::to_string(e.compressed_size) +
             " and " + std::to_string(e.size));
  if (e.method == kDEFLATED && e.size / kDEFLATE_MAX_RATIO > e.compressed_size + 1)
    fail(ErrorCode::kCORRUPT_FILE, e,
         "claims to inflate " + std::to_string(e.compressed_size) + " bytes to " +
             std::to_string(e.size) + ", beyond what deflate can reach (a zip bomb?)");
  const uint64_t data_pos = locate(i);
  const std::byte* in = bytes.data() + data_pos;
  // Not zero-filled: pages are touched only as they are written. The size is bounded by the
  // caller's cap and by deflate's ratio, but may still be more than this machine has.
  std::unique_ptr<std::byte[]> out;
  try {
    out.reset(new std::byte[std::max<uint64_t>(e.size, 1)]);
  } catch (const std::bad_alloc&) {
    fail(ErrorCode::kIO, e, "cannot allocate " + std::to_string(e.size) + " bytes for it");
  }
  if (e.method == kSTORED) {
    if (e.size > 0) std::memcpy(out.get(), in, e.size);
  } else {
    z_stream z{};
    if (inflateInit2(&z, -MAX_WBITS) != Z_OK) fail(ErrorCode::kIO, e, "zlib inflateInit2 failed");
    uint64_t in_left = e.compressed_size, out_left = e.size;
    z.next_in = const_cast<Bytef*>(reinterpret_cast<const Bytef*>(in));
    z.next_out = reinterpret_cast<Bytef*>(out.get());
    int rc = Z_OK;
    while (rc == Z_OK) {
      // zlib counts in uInt: feed at most 1 GiB of input and output at a time.
      const uInt in_chunk = static_cast<uInt>(std::min<uint64_t>(in_left, 1u << 30));
      const uInt out_chunk = static_cast<uInt>(std::min<uint64_t>(out_left, 1u << 30));
      z.avail_in = in_chunk;
      z.avail_out = out_chunk;
      rc = inflate(&z, Z_NO_FLUSH);
      in_left -= in_chunk - z.avail_in;
      out_left -= out_chunk - z.avail_out;
      if (rc == Z_BUF_ERROR && (in_left == 0 || out_left == 0)) break;  // no progress possible
      if (rc == Z_OK && in_chunk == z.avail_in && out_chunk == z.avail_out) break;
    }
    inflateEnd(&z);
    if (rc != Z_STREAM_END || out_left != 0)
      fail(ErrorCode::kCORRUPT_FILE, e,
           rc == Z_STREAM_END || rc == Z_OK || rc == Z_BUF_ERROR
               ? "its deflate data gives " + std::to_string(e.size - out_left) + " of " +
                     std::to_string(e.size) + " bytes" + (out_left == 0 ? " and more" : "")
               : "its deflate data is damaged (zlib error " + std::to_string(rc) + ")");
  }
  const uint32_t crc = crc32_of(out.get(), e.size);
  if (crc != e.crc32)
    fail(ErrorCode::kCHECKSUM_MISMATCH, e,
         "CRC-32 mismatch (the data is damaged): stored " + std::to_string(e.crc32) +
             ", computed " + std::to_string(crc));
  return out;
}

ZipArchive::ZipArchive() = default;
ZipArchive::ZipArchive(ZipArchive&&) noexcept = default;
ZipArchive& ZipArchive::operator=(ZipArchive&&) noexcept = default;
ZipArchive::~ZipArchive() = default;

ZipArchive ZipArchive::open(std::span<const std::byte> bytes, std::string origin) {
  ZipArchive z;
  z.impl_ = std::make_unique<Impl>();
  z.impl_->bytes = bytes;
  z.impl_->origin = std::move(origin);
  z.impl_->read_directory();
  return z;
}

const std::vector<ZipEntry>& ZipArchive::entries() const { return impl_->entries; }

int ZipArchive::find(std::string_view name) const {
  const auto it = impl_->index.find(std::string(name));
  return it == impl_->index.end() ? -1 : static_cast<int>(it->second);
}

ZipRecord ZipArchive::record(size_t i, uint64_t max_size) const {
  const Impl& m = *impl_;
  const ZipEntry& e = m.entries.at(i);
  ZipRecord r;
  if (e.method == kSTORED) {
    if (e.compressed_size != e.size)
      m.fail(ErrorCode::kCORRUPT_FILE, e,
             "stored (uncompressed) but its sizes differ: " + std::to_string(e.compressed_size) +
                 " and " + std::to_string(e.size));
    const uint64_t data_pos = m.locate(i);
    r.bytes = m.bytes.subspan(data_pos, e.size);
    r.offset = static_cast<int64_t>(data_pos);
    return r;
  }
  r.owned = m.read(i, max_size);
  r.bytes = {r.owned.get(), e.size};
  return r;
}

std::vector<std::byte> ZipArchive::extract(size_t i, uint64_t max_size) const {
  const std::unique_ptr<std::byte[]> data = impl_->read(i, max_size);
  return std::vector<std::byte>(data.get(), data.get() + impl_->entries.at(i).size);
}

}  // namespace bindery::io

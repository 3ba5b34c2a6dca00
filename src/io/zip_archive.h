#pragma once
// ZipArchive: read-only access to a zip archive held in memory (a memory-mapped torch.save
// file). The directory is parsed here (zip64 included: checkpoint shards are often over
// 4 GiB), so that nothing is read twice and stored entries can be handed out as zero-copy
// views; zlib inflates deflated entries and computes CRC-32s.
//
// Archives may be hostile. open() rejects a missing or damaged end record or central
// directory (every entry inside it, the count plausible), multi-disk and encrypted archives,
// and duplicate names or names with NUL bytes. record() and extract() check, for every entry
// they are asked for, that its local header is where the directory says and agrees with it
// (name, method, sizes, or the data descriptor after the data when the writer used one, as
// torch's does), and that the data lies inside the archive. Deflated entries are inflated into
// an owned buffer whose size is capped by the caller and by what deflate can reach (1032:1),
// and must inflate to exactly the size the directory states.
// Failures are kCORRUPT_FILE (kCHECKSUM_MISMATCH for a CRC, kUNSUPPORTED for a compression
// method other than stored and deflated, encryption or several disks, kIO when the memory for
// an inflated entry cannot be had) naming the archive (`origin`) and the entry.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace bindery::io {

struct ZipEntry {
  std::string name;
  uint16_t method = 0;  // 0 stored, 8 deflated
  uint64_t compressed_size = 0;
  uint64_t size = 0;  // uncompressed
  uint32_t crc32 = 0;
};

/// An entry's bytes: a view into the archive (stored) or into `owned` (inflated).
struct ZipRecord {
  std::span<const std::byte> bytes;
  int64_t offset = -1;  // of `bytes` in the archive; -1 when inflated
  std::unique_ptr<std::byte[]> owned;
};

class ZipArchive {
 public:
  /// Reads the central directory of the archive `bytes`, which are not copied and must outlive
  /// this object. `origin` names the archive in errors (e.g. "'model.pt'"). kCORRUPT_FILE when
  /// `bytes` is not a zip archive or its directory is damaged.
  static ZipArchive open(std::span<const std::byte> bytes, std::string origin);

  ZipArchive(ZipArchive&&) noexcept;
  ZipArchive& operator=(ZipArchive&&) noexcept;
  ~ZipArchive();

  /// In central directory order.
  const std::vector<ZipEntry>& entries() const;
  /// Index of the entry named exactly `name`, or -1.
  int find(std::string_view name) const;

  /// Entry `i`'s bytes in place: a stored entry is a zero-copy view into the archive (its CRC
  /// is not checked: tensors can be gigabytes); a deflated one is inflated, at most `max_size`
  /// bytes, and CRC-checked. Thread-safe (the archive is only read).
  ZipRecord record(size_t i, uint64_t max_size) const;
  /// Entry `i` copied out and CRC-checked whatever its method (for small entries: data.pkl,
  /// byteorder). At most `max_size` bytes.
  std::vector<std::byte> extract(size_t i, uint64_t max_size) const;

 private:
  ZipArchive();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace bindery::io

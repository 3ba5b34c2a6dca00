#pragma once
// Read-only or copy-on-write memory map of a whole file (POSIX mmap). Move-only.

#include <cstddef>
#include <cstdint>
#include <string>

namespace bindery {

class MappedFile {
 public:
  enum class Mode { kREAD_ONLY, kCOPY_ON_WRITE };
  /// Maps `path`; throws Error(kIO) naming the file and the OS error on failure.
  /// An empty file maps to size 0, data nullptr.
  static MappedFile open(const std::string& path, Mode mode = Mode::kREAD_ONLY);

  MappedFile() = default;
  MappedFile(MappedFile&& o) noexcept;
  MappedFile& operator=(MappedFile&& o) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  const std::byte* data() const { return static_cast<const std::byte*>(data_); }
  std::byte* mutable_data() { return static_cast<std::byte*>(data_); }  // kCOPY_ON_WRITE only
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  void reset();
  void* data_ = nullptr;
  size_t size_ = 0;
  std::string path_;
};

/// Writes `size` bytes to `path` atomically: a temporary file beside it, fsync, rename.
void write_file_atomic(const std::string& path, const void* data, size_t size);

}  // namespace bindery

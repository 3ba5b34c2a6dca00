// safetensors writing. The header is the reference writer's compact JSON
// ({"__metadata__":{...},"name":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},...}),
// padded with spaces so that the data section starts 8-byte aligned. Tensors keep the caller's
// order (the reference sorts them by dtype size, then name; readers do not depend on either).
//
// The file is streamed to a temporary file beside `path` and renamed over it once fsynced:
// write_file_atomic would need the whole multi-gigabyte image in memory first. Everything is
// validated before the temporary file is created, so a bad argument writes nothing.

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>
#include <string_view>

#include "bindery/error.h"
#include "bindery/io/safetensors.h"

namespace bindery::io {

namespace {

using Json = nlohmann::json;

std::string single_quoted(std::string_view s) {
  std::string q;  // not "'" + s + "'", which trips GCC 12's -Wrestrict false positive
  q.reserve(s.size() + 2);
  q.append(1, '\'').append(s).append(1, '\'');
  return q;
}

// `s` as a JSON string literal; kINVALID_ARGUMENT naming `what` if it is not valid UTF-8.
std::string json_string(const std::string& s, const std::string& what) {
  try {
    return Json(s).dump();
  } catch (const Json::exception&) {
    throw Error(ErrorCode::kINVALID_ARGUMENT, what + " is not valid UTF-8");
  }
}

// A file written under a temporary name beside its destination and renamed onto it by
// commit(); removed if commit() is never reached.
class TemporaryFile {
 public:
  explicit TemporaryFile(const std::string& path) : path_(path) {
    static std::atomic<uint64_t> counter{0};
    temp_ = path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
    fd_ = ::open(temp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    check(fd_ >= 0, ErrorCode::kIO,
          "cannot create " + single_quoted(temp_) + " to write " + single_quoted(path_) + ": " +
              os_error());
  }
  TemporaryFile(const TemporaryFile&) = delete;
  TemporaryFile& operator=(const TemporaryFile&) = delete;
  ~TemporaryFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(temp_.c_str());
  }

  void write(const void* data, size_t size) {
    const char* p = static_cast<const char*>(data);
    while (size > 0) {
      const ssize_t n = ::write(fd_, p, size);
      if (n < 0 && errno == EINTR) continue;
      check(n > 0, ErrorCode::kIO,
            "cannot write " + single_quoted(temp_) + " (for " + single_quoted(path_) +
                "): " + (n < 0 ? os_error() : std::string("no progress")));
      p += n;
      size -= static_cast<size_t>(n);
    }
  }

  void commit() {
    check(::fsync(fd_) == 0, ErrorCode::kIO,
          "cannot flush " + single_quoted(temp_) + ": " + os_error());
    const int fd = fd_;
    fd_ = -1;
    check(::close(fd) == 0, ErrorCode::kIO,
          "cannot close " + single_quoted(temp_) + ": " + os_error());
    check(::rename(temp_.c_str(), path_.c_str()) == 0, ErrorCode::kIO,
          "cannot rename " + single_quoted(temp_) + " to " + single_quoted(path_) + ": " +
              os_error());
    committed_ = true;
  }

 private:
  static std::string os_error() { return std::strerror(errno); }

  std::string path_;
  std::string temp_;
  int fd_ = -1;
  bool committed_ = false;
};

// The byte size of `t`, after checking its name and shape (kINVALID_ARGUMENT).
int64_t checked_size(const TensorToWrite& t, const std::string& what) {
  int64_t bytes = element_size(t.dtype);
  for (int64_t d : t.shape) {
    check(d >= 0, ErrorCode::kINVALID_ARGUMENT,
          what + " has shape " + to_string(t.shape) + ", expected non-negative dims");
    check(!__builtin_mul_overflow(bytes, d, &bytes), ErrorCode::kINVALID_ARGUMENT,
          what + " has shape " + to_string(t.shape) + ", whose byte size overflows 64 bits");
  }
  check(t.data != nullptr || bytes == 0, ErrorCode::kINVALID_ARGUMENT,
        what + " has " + std::to_string(bytes) + " bytes but no data");
  return bytes;
}

}  // namespace

void write_safetensors(const std::string& path, std::span<const TensorToWrite> tensors,
                       const std::map<std::string, std::string>& metadata) {
  const std::string prefix = "writing safetensors " + single_quoted(path) + ": ";
  std::string header = "{";
  if (!metadata.empty()) {
    header += "\"__metadata__\":{";
    for (const auto& [key, value] : metadata) {
      if (header.back() != '{') header += ',';
      header += json_string(key, prefix + "metadata key " + single_quoted(key)) + ':' +
                json_string(value, prefix + "metadata value of " + single_quoted(key));
    }
    header += '}';
  }
  std::set<std::string_view> names;
  std::vector<int64_t> sizes;
  sizes.reserve(tensors.size());
  int64_t offset = 0;
  for (const TensorToWrite& t : tensors) {
    const std::string what = prefix + "tensor " + single_quoted(t.name);
    check(!t.name.empty(), ErrorCode::kINVALID_ARGUMENT,
          prefix + "tensor " + std::to_string(sizes.size()) + " has an empty name");
    check(t.name != "__metadata__", ErrorCode::kINVALID_ARGUMENT,
          what + ": the name is reserved for the metadata");
    check(names.insert(t.name).second, ErrorCode::kINVALID_ARGUMENT,
          what + " is given twice (names must be unique)");
    const int64_t bytes = checked_size(t, what);
    check(!__builtin_add_overflow(offset, bytes, &offset), ErrorCode::kINVALID_ARGUMENT,
          what + ": the data section would exceed 2^63 bytes");
    sizes.push_back(bytes);

    if (header.size() > 1) header += ',';
    header += json_string(t.name, what + ": the name") + ":{\"dtype\":\"" +
              std::string(element_type_name(t.dtype)) + "\",\"shape\":[";
    for (size_t i = 0; i < t.shape.size(); ++i) {
      if (i) header += ',';
      header += std::to_string(t.shape[i]);
    }
    header += "],\"data_offsets\":[" + std::to_string(offset - bytes) + "," +
              std::to_string(offset) + "]}";
  }
  header += '}';
  header.append((8 - header.size() % 8) % 8, ' ');
  check(header.size() <= static_cast<size_t>(kMAX_SAFETENSORS_HEADER), ErrorCode::kINVALID_ARGUMENT,
        prefix + "the header would be " + std::to_string(header.size()) +
            " bytes, more than readers accept (" + std::to_string(kMAX_SAFETENSORS_HEADER) + ")");

  unsigned char length[8];
  for (int i = 0; i < 8; ++i) length[i] = static_cast<unsigned char>(header.size() >> (8 * i));
  TemporaryFile file(path);
  file.write(length, sizeof length);
  file.write(header.data(), header.size());
  for (size_t i = 0; i < tensors.size(); ++i)
    if (sizes[i] > 0) file.write(tensors[i].data, static_cast<size_t>(sizes[i]));
  file.commit();
}

}  // namespace bindery::io

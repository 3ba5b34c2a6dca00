#include "core/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "bindery/error.h"

namespace bindery {

namespace {
std::string os_error() { return std::strerror(errno); }
}  // namespace

MappedFile MappedFile::open(const std::string& path, Mode mode) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  check(fd >= 0, ErrorCode::kIO, "cannot open '" + path + "': " + os_error());
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const std::string e = os_error();
    ::close(fd);
    throw Error(ErrorCode::kIO, "cannot stat '" + path + "': " + e);
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(ErrorCode::kIO, "'" + path + "' is not a regular file");
  }
  MappedFile f;
  f.path_ = path;
  f.size_ = static_cast<size_t>(st.st_size);
  if (f.size_ > 0) {
    const int prot = mode == Mode::kREAD_ONLY ? PROT_READ : PROT_READ | PROT_WRITE;
    void* p = ::mmap(nullptr, f.size_, prot, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      const std::string e = os_error();
      ::close(fd);
      throw Error(ErrorCode::kIO, "cannot map '" + path + "': " + e);
    }
    f.data_ = p;
  }
  ::close(fd);
  return f;
}

MappedFile::MappedFile(MappedFile&& o) noexcept
    : data_(std::exchange(o.data_, nullptr)),
      size_(std::exchange(o.size_, 0)),
      path_(std::move(o.path_)) {}

MappedFile& MappedFile::operator=(MappedFile&& o) noexcept {
  if (this != &o) {
    reset();
    data_ = std::exchange(o.data_, nullptr);
    size_ = std::exchange(o.size_, 0);
    path_ = std::move(o.path_);
  }
  return *this;
}

MappedFile::~MappedFile() { reset(); }

void MappedFile::reset() {
  if (data_) ::munmap(data_, size_);
  data_ = nullptr;
  size_ = 0;
}

void write_file_atomic(const std::string& path, const void* data, size_t size) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  check(fd >= 0, ErrorCode::kIO, "cannot create '" + tmp + "': " + os_error());
  const char* p = static_cast<const char*>(data);
  size_t left = size;
  while (left > 0) {
    const ssize_t n = ::write(fd, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      const std::string e = os_error();
      ::close(fd);
      ::unlink(tmp.c_str());
      throw Error(ErrorCode::kIO, "cannot write '" + tmp + "': " + e);
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    const std::string e = os_error();
    ::unlink(tmp.c_str());
    throw Error(ErrorCode::kIO, "cannot flush '" + tmp + "': " + e);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string e = os_error();
    ::unlink(tmp.c_str());
    throw Error(ErrorCode::kIO, "cannot rename '" + tmp + "' to '" + path + "': " + e);
  }
}

}  // namespace bindery

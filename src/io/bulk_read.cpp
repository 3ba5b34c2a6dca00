#include "io/bulk_read.h"

#include <fcntl.h>
#include <omp.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <exception>
#include <map>
#include <mutex>

#include "bindery/error.h"
#include "io/tensor_convert.h"

namespace bindery::io {
namespace {

// Small enough to spread one large tensor over every core, large enough that the per-call
// cost (a syscall, a page-cache lookup per page) stays negligible.
constexpr int64_t kCHUNK_BYTES = 16 << 20;

class OpenFiles {
 public:
  ~OpenFiles() {
    for (const auto& [path, fd] : fds_) ::close(fd);
  }
  int fd(const std::string& path) {
    auto it = fds_.find(path);
    if (it != fds_.end()) return it->second;
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    check(fd >= 0, ErrorCode::kIO, "cannot open " + path + ": " + std::strerror(errno));
    // Reads go front to back (chunks in order, a few in flight): let the kernel read ahead
    // further than its default, which matters when the file is not in the page cache.
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    fds_.emplace(path, fd);
    return fd;
  }

 private:
  std::map<std::string, int> fds_;
};

struct Task {
  StoredTensor part;  // the tensor or a contiguous run of its elements
  std::byte* dst;
  std::optional<DataType> as;
  int fd = -1;  // >= 0: pread part.size_bytes() at part.file_offset
};

void pread_all(const Task& t) {
  auto* dst = t.dst;
  int64_t left = t.part.size_bytes();
  int64_t offset = t.part.file_offset;
  while (left > 0) {
    const ssize_t n = ::pread(t.fd, dst, static_cast<size_t>(left), offset);
    if (n < 0 && errno == EINTR) continue;
    check(n > 0, ErrorCode::kIO,
          "reading tensor '" + t.part.name + "' from " + t.part.file + " at offset " +
              std::to_string(offset) + ": " + (n < 0 ? std::strerror(errno) : "file ended early"));
    dst += n;
    left -= n;
    offset += n;
  }
}

// Splits contiguous tensors into chunks of about kCHUNK_BYTES of output.
void add_tasks(const BulkCopy& c, OpenFiles& files, bool use_pread, std::vector<Task>& tasks) {
  const StoredTensor& t = *c.tensor;
  const bool same_type = !c.as || to_data_type(t.dtype) == c.as;
  auto* dst = static_cast<std::byte*>(c.dst);
  if (!t.is_contiguous() || t.count() == 0) {
    tasks.push_back({t, dst, c.as});
    return;
  }
  const int64_t in_size = element_size(t.dtype);
  const int64_t out_size = c.as ? dtype_bytes(*c.as, 1) : in_size;
  const int64_t per_chunk = std::max<int64_t>(1, kCHUNK_BYTES / std::max(in_size, out_size));
  const bool by_pread = use_pread && same_type && t.file_offset >= 0;
  const int fd = by_pread ? files.fd(t.file) : -1;
  for (int64_t first = 0; first < t.count(); first += per_chunk) {
    const int64_t n = std::min(per_chunk, t.count() - first);
    Task task{t, dst + first * out_size, c.as, fd};
    task.part.shape = {n};
    task.part.strides = {1};
    task.part.data = t.data + first * in_size;
    if (t.file_offset >= 0) task.part.file_offset = t.file_offset + first * in_size;
    tasks.push_back(std::move(task));
  }
}

}  // namespace

void bulk_read(std::span<const BulkCopy> copies, const ReadOptions& options) {
  OpenFiles files;
  std::vector<Task> tasks;
  int64_t total = 0;
  for (const BulkCopy& c : copies) {
    add_tasks(c, files, options.use_pread, tasks);
    total += converted_bytes(*c.tensor, c.as);
  }
  std::atomic<int64_t> done{0};
  std::exception_ptr failure;
  std::mutex failure_mutex;
  const int threads = options.threads > 0 ? options.threads : omp_get_max_threads();
  const auto report = [&] {
    if (options.progress) options.progress(done.load(), total);
  };
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (size_t i = 0; i < tasks.size(); ++i) {
    {
      std::lock_guard lock(failure_mutex);
      if (failure) continue;
    }
    try {
      const Task& t = tasks[i];
      if (t.fd >= 0)
        pread_all(t);
      else
        copy_converted(t.part, t.dst, t.as);
      done += converted_bytes(t.part, t.as);
      if (omp_get_thread_num() == 0) report();
    } catch (...) {
      std::lock_guard lock(failure_mutex);
      if (!failure) failure = std::current_exception();
    }
  }
  if (failure) std::rethrow_exception(failure);
  report();
}

}  // namespace bindery::io

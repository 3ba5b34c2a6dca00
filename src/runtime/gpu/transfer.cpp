#include "runtime/gpu/transfer.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "bindery/error.h"
#include "runtime/cuda/elementwise.h"

namespace bindery {

namespace {

constexpr int64_t kDEFAULT_CHUNK_MB = 4;     // pageable memory is staged in pieces of this
constexpr int64_t kDIRECT_PIECE = 64 << 20;  // direct copies are spread over streams in these
constexpr int kDIRECT_STREAMS = 4;
constexpr int kMAX_WORKERS = 16;

// BINDERY_TRANSFER_WORKERS / BINDERY_TRANSFER_CHUNK_MB (tuning, benchmarks): staging threads
// and chunk size. The defaults, 3/4 of the cores (at most 16) and 4 MiB, were the best of
// bench_cuda_transfer's grid on a 16-core H100 host (50 GB/s, the pinned DMA rate; 8 MiB
// chunks or every core gave 37: the chunks in flight then outgrow the last-level cache).
int64_t env_int(const char* name, int64_t fallback, int64_t lo, int64_t hi) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  const long long n = std::strtoll(v, &end, 10);
  check(*end == 0 && n >= lo && n <= hi, ErrorCode::kINVALID_ARGUMENT,
        std::string(name) + " must be an integer in [" + std::to_string(lo) + ", " +
            std::to_string(hi) + "], got '" + v + "'");
  return n;
}

void cuda_ok(cudaError_t e, const std::string& what) {
  if (e != cudaSuccess) {
    cudaGetLastError();
    throw Error(ErrorCode::kDEVICE, what + ": " + cudaGetErrorString(e));
  }
}

std::mutex g_fail_mutex;
int64_t g_fail_after = -1;

// The test hook: counts a chunk, throwing for the one it was told to fail.
void count_chunk() {
  const std::lock_guard lock(g_fail_mutex);
  if (g_fail_after < 0) return;
  if (g_fail_after-- == 0)
    throw Error(ErrorCode::kDEVICE, "injected failure (fail_transfer_after_chunks_for_testing)");
}

// What a transfer keeps per device: streams for direct copies, and the staging workers'
// pinned buffers, streams and events. Made on first use, never freed (the process keeps them;
// freeing at exit would race the CUDA runtime's own teardown).
struct DeviceState {
  struct Worker {
    cudaStream_t stream = nullptr;
    void* buffer[2] = {nullptr, nullptr};
    cudaEvent_t sent[2] = {nullptr, nullptr};  // the buffer's last copy out of it
  };
  std::mutex mutex;  // one transfer at a time
  std::vector<cudaStream_t> direct;
  std::vector<Worker> workers;
  int64_t chunk = 0;  // bytes of each staging buffer
};

DeviceState& state_of(int device) {
  static std::mutex mutex;
  static std::map<int, DeviceState*> states;
  const std::lock_guard lock(mutex);
  DeviceState*& s = states[device];
  if (!s) s = new DeviceState;
  return *s;
}

int worker_count() {
  const unsigned hw = std::thread::hardware_concurrency();
  const int fallback = std::clamp(static_cast<int>(hw == 0 ? 4 : hw * 3 / 4), 1, kMAX_WORKERS);
  return static_cast<int>(env_int("BINDERY_TRANSFER_WORKERS", fallback, 1, 256));
}

int64_t chunk_bytes() {
  return env_int("BINDERY_TRANSFER_CHUNK_MB", kDEFAULT_CHUNK_MB, 1, 1024) << 20;
}

void make_streams(DeviceState& s, const std::string& what) {
  if (!s.direct.empty()) return;
  for (int i = 0; i < kDIRECT_STREAMS; ++i) {
    cudaStream_t st = nullptr;
    cuda_ok(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking), what + ": creating a stream");
    s.direct.push_back(st);
  }
}

void free_workers(DeviceState& s) {
  for (auto& w : s.workers) {
    cudaStreamSynchronize(w.stream);
    cudaStreamDestroy(w.stream);
    for (int b = 0; b < 2; ++b) {
      cudaFreeHost(w.buffer[b]);
      cudaEventDestroy(w.sent[b]);
    }
  }
  s.workers.clear();
}

void make_workers(DeviceState& s, int count, int64_t chunk, const std::string& what) {
  if (static_cast<int>(s.workers.size()) == count && s.chunk == chunk) return;
  free_workers(s);
  std::vector<DeviceState::Worker> workers(static_cast<size_t>(count));
  for (auto& w : workers) {
    cuda_ok(cudaStreamCreateWithFlags(&w.stream, cudaStreamNonBlocking),
            what + ": creating a stream");
    for (int b = 0; b < 2; ++b) {
      cuda_ok(
          cudaHostAlloc(&w.buffer[b], static_cast<size_t>(chunk), cudaHostAllocDefault),
          what + ": allocating " + std::to_string(chunk >> 20) + " MiB of pinned staging memory");
      cuda_ok(cudaEventCreateWithFlags(&w.sent[b], cudaEventDisableTiming),
              what + ": creating an event");
    }
  }
  s.workers = std::move(workers);
  s.chunk = chunk;
}

enum class SourceKind { kPAGEABLE, kPINNED, kDEVICE };

SourceKind kind_of(const void* p) {
  cudaPointerAttributes attr{};
  if (cudaPointerGetAttributes(&attr, p) != cudaSuccess) {
    cudaGetLastError();
    return SourceKind::kPAGEABLE;
  }
  switch (attr.type) {
    case cudaMemoryTypeDevice:
    case cudaMemoryTypeManaged: return SourceKind::kDEVICE;
    case cudaMemoryTypeHost: return SourceKind::kPINNED;
    default: return SourceKind::kPAGEABLE;
  }
}

int64_t src_pitch(const DeviceCopy& c) { return c.src_pitch ? c.src_pitch : c.row_bytes; }
int64_t dst_pitch(const DeviceCopy& c) { return c.dst_pitch ? c.dst_pitch : c.row_bytes; }
bool contiguous(const DeviceCopy& c) {
  return c.rows == 1 || (src_pitch(c) == c.row_bytes && dst_pitch(c) == c.row_bytes);
}

// Cuts `c` into copies of at most `piece` bytes (whole rows when rows fit; a row longer than
// `piece` is cut on its own).
void cut(const DeviceCopy& c, int64_t piece, std::vector<DeviceCopy>& out) {
  if (c.bytes() == 0) return;
  if (contiguous(c)) {
    const int64_t total = c.bytes();
    for (int64_t at = 0; at < total; at += piece) {
      DeviceCopy p = c;
      p.dst = static_cast<std::byte*>(c.dst) + at;
      p.src = static_cast<const std::byte*>(c.src) + at;
      p.row_bytes = std::min(piece, total - at);
      p.rows = 1;
      p.src_pitch = p.dst_pitch = 0;
      out.push_back(p);
    }
    return;
  }
  if (c.row_bytes > piece) {
    for (int64_t r = 0; r < c.rows; ++r) {
      DeviceCopy row = c;
      row.dst = static_cast<std::byte*>(c.dst) + r * dst_pitch(c);
      row.src = static_cast<const std::byte*>(c.src) + r * src_pitch(c);
      row.rows = 1;
      row.src_pitch = row.dst_pitch = 0;
      cut(row, piece, out);
    }
    return;
  }
  const int64_t per = std::max<int64_t>(1, piece / c.row_bytes);
  for (int64_t r = 0; r < c.rows; r += per) {
    DeviceCopy p = c;
    p.dst = static_cast<std::byte*>(c.dst) + r * dst_pitch(c);
    p.src = static_cast<const std::byte*>(c.src) + r * src_pitch(c);
    p.rows = std::min(per, c.rows - r);
    out.push_back(p);
  }
}

// Queues a copy whose source the DMA engines (or a conversion kernel) read directly.
void send_direct(const DeviceCopy& c, cudaStream_t stream, const std::string& what) {
  count_chunk();
  if (c.convert_from) {
    const int64_t count = c.row_bytes * 8 / dtype_bits(c.convert_to);
    cuda::convert(*c.convert_from, c.src, c.convert_to, c.dst, count, stream);
    cuda_ok(cudaGetLastError(), what + ": converting on the GPU");
  } else if (c.rows == 1) {
    cuda_ok(
        cudaMemcpyAsync(c.dst, c.src, static_cast<size_t>(c.row_bytes), cudaMemcpyDefault, stream),
        what + ": copy");
  } else {
    cuda_ok(cudaMemcpy2DAsync(c.dst, static_cast<size_t>(dst_pitch(c)), c.src,
                              static_cast<size_t>(src_pitch(c)), static_cast<size_t>(c.row_bytes),
                              static_cast<size_t>(c.rows), cudaMemcpyDefault, stream),
            what + ": strided copy");
  }
}

// One worker: takes chunks in turn, copies each into one of its two pinned buffers (waiting
// for that buffer's previous copy to leave) and sends it on its stream.
void stage_chunks(DeviceState::Worker& w, int device, const std::vector<DeviceCopy>& chunks,
                  std::atomic<size_t>& next, std::atomic<bool>& stop, const std::string& what) {
  cuda_ok(cudaSetDevice(device), what + ": selecting cuda:" + std::to_string(device));
  int turn = 0;
  for (size_t i = next++; i < chunks.size() && !stop; i = next++, turn ^= 1) {
    const DeviceCopy& c = chunks[i];
    cuda_ok(cudaEventSynchronize(w.sent[turn]), what + ": waiting for a staging buffer");
    auto* buffer = static_cast<std::byte*>(w.buffer[turn]);
    if (src_pitch(c) == c.row_bytes) {
      std::memcpy(buffer, c.src, static_cast<size_t>(c.bytes()));
    } else {
      for (int64_t r = 0; r < c.rows; ++r)
        std::memcpy(buffer + r * c.row_bytes,
                    static_cast<const std::byte*>(c.src) + r * src_pitch(c),
                    static_cast<size_t>(c.row_bytes));
    }
    DeviceCopy from_buffer = c;
    from_buffer.src = buffer;
    from_buffer.src_pitch = 0;
    send_direct(from_buffer, w.stream, what);
    cuda_ok(cudaEventRecord(w.sent[turn], w.stream), what + ": recording an event");
  }
}

}  // namespace

void fail_transfer_after_chunks_for_testing(int64_t chunks) {
  const std::lock_guard lock(g_fail_mutex);
  g_fail_after = chunks;
}

void copy_to_device(Device device, std::span<const DeviceCopy> copies, const std::string& what) {
  DeviceState& s = state_of(device.index);
  const std::lock_guard lock(s.mutex);
  cuda_ok(cudaSetDevice(device.index), what + ": selecting " + device.to_string());
  make_streams(s, what);
  const int64_t chunk = chunk_bytes();
  const int workers = worker_count();
  std::vector<DeviceCopy> direct, staged;
  for (const DeviceCopy& c : copies) {
    if (c.bytes() == 0) continue;
    if (c.convert_from) {
      check(contiguous(c), ErrorCode::kINTERNAL, what + ": a converting copy must be contiguous");
      direct.push_back(c);  // one kernel: converting copies are not cut
      continue;
    }
    const bool pageable = kind_of(c.src) == SourceKind::kPAGEABLE;
    cut(c, pageable ? chunk : kDIRECT_PIECE, pageable ? staged : direct);
  }
  if (!staged.empty()) make_workers(s, workers, chunk, what);
  // Whatever fails, every stream is drained before this returns: the sources are the caller's
  // and may be freed as soon as it does.
  std::exception_ptr error;
  try {
    for (size_t i = 0; i < direct.size(); ++i)
      send_direct(direct[i], s.direct[i % s.direct.size()], what);
  } catch (...) {
    error = std::current_exception();
  }
  if (!staged.empty() && !error) {
    std::atomic<size_t> next{0};
    std::atomic<bool> stop{false};
    const size_t n = std::min(s.workers.size(), staged.size());
    std::vector<std::exception_ptr> errors(n);
    std::vector<std::thread> threads;
    for (size_t t = 0; t < n; ++t)
      threads.emplace_back([&, t] {
        try {
          stage_chunks(s.workers[t], device.index, staged, next, stop, what);
        } catch (...) {
          errors[t] = std::current_exception();
          stop = true;
        }
      });
    for (auto& t : threads) t.join();
    for (const auto& e : errors)
      if (e && !error) error = e;
  }
  std::string sync_error;
  for (cudaStream_t st : s.direct)
    if (const cudaError_t e = cudaStreamSynchronize(st); e != cudaSuccess && sync_error.empty())
      sync_error = cudaGetErrorString(e);
  for (const auto& w : s.workers)
    if (const cudaError_t e = cudaStreamSynchronize(w.stream);
        e != cudaSuccess && sync_error.empty())
      sync_error = cudaGetErrorString(e);
  if (error) std::rethrow_exception(error);
  if (!sync_error.empty()) {
    cudaGetLastError();
    throw Error(ErrorCode::kDEVICE, what + ": " + sync_error);
  }
}

}  // namespace bindery

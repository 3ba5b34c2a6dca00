// The Stream: one worker thread runs tasks in submission order, so a refit enqueued between
// two runs is seen by the second and not the first, as on a CUDA stream. A stream of a CUDA
// device is the same queue: each task drives the GPU (a context's run on its own CUDA stream,
// a refit's copies) and finishes before the next starts.

#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>
#include <utility>

#include "bindery/error.h"
#include "bindery/stream.h"
#include "core/device_memory.h"

namespace bindery {

namespace {

class CpuStream final : public Stream {
 public:
  explicit CpuStream(Device device) : device_(device), worker_([this] { loop(); }) {}
  ~CpuStream() override {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    worker_.join();
  }
  Device device() const override { return device_; }
  void enqueue_host(std::function<void()> task) override {
    {
      std::lock_guard lock(mutex_);
      tasks_.push_back(std::move(task));
      ++pending_;
    }
    wake_.notify_all();
  }
  void synchronize() override {
    std::unique_lock lock(mutex_);
    idle_.wait(lock, [this] { return pending_ == 0; });
    if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
  }

 private:
  void loop() {
    std::unique_lock lock(mutex_);
    while (true) {
      wake_.wait(lock, [this] { return stopping_ || !tasks_.empty(); });
      if (tasks_.empty()) return;  // stopping and drained
      auto task = std::move(tasks_.front());
      tasks_.pop_front();
      lock.unlock();
      std::exception_ptr err;
      try {
        task();
      } catch (...) {
        err = std::current_exception();
      }
      lock.lock();
      if (err && !error_) error_ = err;
      if (--pending_ == 0) idle_.notify_all();
    }
  }

  Device device_;
  std::mutex mutex_;
  std::condition_variable wake_, idle_;
  std::deque<std::function<void()>> tasks_;
  int64_t pending_ = 0;
  bool stopping_ = false;
  std::exception_ptr error_;
  std::thread worker_;  // last: starts after the members it uses
};

}  // namespace

std::unique_ptr<Stream> Stream::create(Device device) {
  check(device.is_cpu() || cuda_available(), ErrorCode::kDEVICE,
        "cannot create a stream on " + device.to_string() + ": " + cuda_unavailable_reason());
  return std::make_unique<CpuStream>(device);
}

}  // namespace bindery

#pragma once
// Stream: an ordered queue of work on a device: a worker thread running tasks in submission
// order. On a GPU each task drives the device (a context's run on the context's own CUDA
// stream, a refit's copies) and has finished when the next starts; raw cudaStream_t handles
// are not taken yet. ExecutionContext::enqueue and Refitter::refit_async put work on a
// stream; work runs in the order it was enqueued.

#include <functional>
#include <memory>

#include "bindery/device.h"

namespace bindery {

class Stream {
 public:
  virtual ~Stream() = default;
  /// Creates a stream on `device`. Throws kDEVICE if the device is not available.
  static std::unique_ptr<Stream> create(Device device = Device::cpu());
  virtual Device device() const = 0;
  /// Blocks until all enqueued work finished; rethrows the first error a task raised since
  /// the last synchronize (the stream then continues with later tasks).
  virtual void synchronize() = 0;
  /// Runs `task` on the stream's worker after everything enqueued before it.
  virtual void enqueue_host(std::function<void()> task) = 0;
};

}  // namespace bindery

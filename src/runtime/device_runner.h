#pragma once
// The device side of engines and contexts. A CUDA engine keeps its slots in device memory only
// (DeviceSlots, one allocation per engine, written at creation and by every refit) and each
// of its contexts runs the graph there (DeviceRunner, with the context's KV caches). Built
// from runtime/gpu when the CUDA kernels are built; otherwise runtime/nogpu's stubs throw
// kDEVICE saying so.

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "bindery/device.h"
#include "bindery/plan.h"
#include "bindery/token_selection.h"
#include "bindery/weights.h"

namespace bindery {

/// One copy into device memory: `rows` rows of `row_bytes` bytes, `src_pitch` and `dst_pitch`
/// bytes apart (0: row_bytes, i.e. contiguous). `src` is pageable or pinned host memory or device
/// memory of the same device; which one is looked up per copy. With `convert_from` set, `src`
/// is device memory holding elements of that type, converted on the GPU to `convert_to` (the
/// destination's type; contiguous copies only, row_bytes counts destination bytes).
struct DeviceCopy {
  void* dst = nullptr;
  const void* src = nullptr;
  int64_t row_bytes = 0;
  int64_t rows = 1;
  int64_t src_pitch = 0;
  int64_t dst_pitch = 0;
  std::optional<DataType> convert_from;
  DataType convert_to = DataType::kFLOAT;

  int64_t bytes() const { return row_bytes * rows; }
  /// `n` contiguous bytes.
  static DeviceCopy contiguous(void* dst, const void* src, int64_t n) {
    DeviceCopy c;
    c.dst = dst;
    c.src = src;
    c.row_bytes = n;
    return c;
  }
};

/// Device memory owned by the engine's device (a refit's staging area); freed on destruction.
class DeviceAllocation {
 public:
  virtual ~DeviceAllocation() = default;
  virtual void* data() const = 0;
};

class DeviceSlots {
 public:
  virtual ~DeviceSlots() = default;
  virtual Device device() const = 0;
  /// Device address of slot `slot` (blob offset into the engine's allocation).
  virtual void* slot_ptr(int slot) const = 0;
  /// Runs every copy, in parallel (host chunks staged through pinned buffers by many threads,
  /// on several streams), and returns when all have landed. Copies must not overlap each other.
  /// Throws kDEVICE naming `what` when one fails; the others may then have landed.
  virtual void copy(std::span<const DeviceCopy> copies, const std::string& what) = 0;
  /// Copies slot `slot`'s bytes into host memory (its size in the plan).
  virtual void download(int slot, void* host) const = 0;
  /// Sets every byte of the weights allocation to zero.
  virtual void zero_all() = 0;
  /// `bytes` of spare memory on the engine's device (kDEVICE naming `what` when there is none).
  virtual std::unique_ptr<DeviceAllocation> allocate(int64_t bytes, const std::string& what) = 0;
  /// Content hashes (runtime/cuda/content_hash.h) of device views on this device, computed on
  /// the GPU: delta refit from device memory without downloading it.
  virtual std::vector<uint64_t> hash(std::span<const Weights> views) const = 0;
};

class DeviceRunner {
 public:
  virtual ~DeviceRunner() = default;
  /// Runs the graph on `inputs` (graph input tensor -> host view) and waits for it. Outputs
  /// are then host tensors of the runner (output()).
  virtual void run(const std::map<int, Weights>& inputs) = 0;
  virtual Weights output(int tensor) const = 0;
  /// Selects tokens from output `tensor` on the device after each run (nullopt: off), so the
  /// run copies back their ids instead of the logits.
  virtual void set_token_selection(int tensor, const std::optional<TokenSelection>& s) = 0;
  virtual std::span<const int32_t> selected_tokens(int tensor) const = 0;
  virtual void reset_kv_cache() = 0;
  virtual void reset_sequence(int64_t seq_id) = 0;
  virtual int64_t sequence_length(int64_t seq_id) const = 0;
};

/// Throws kDEVICE when the device is unavailable or this build has no CUDA backend, and
/// kUNSUPPORTED naming the layer when the plan has one the device backend cannot run.
std::unique_ptr<DeviceSlots> make_device_slots(Device device, const PlanMetadata& plan);
std::unique_ptr<DeviceRunner> make_device_runner(Device device, const PlanMetadata& plan,
                                                 const DeviceSlots& slots);

}  // namespace bindery

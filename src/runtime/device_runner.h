#pragma once
// The device side of engines and contexts. A CUDA engine keeps its slots in device memory
// (DeviceSlots, one allocation per engine, written at creation and by every refit) and each
// of its contexts runs the graph there (DeviceRunner, with the context's KV caches). Built
// from runtime/gpu when the CUDA kernels are built; otherwise runtime/nogpu's stubs throw
// kDEVICE saying so.

#include <cstdint>
#include <map>
#include <memory>

#include "bindery/device.h"
#include "bindery/plan.h"
#include "bindery/weights.h"

namespace bindery {

class DeviceSlots {
 public:
  virtual ~DeviceSlots() = default;
  /// Copies slot `slot`'s bytes (its size in the plan) from host memory; synchronous.
  virtual void upload(int slot, const void* host) = 0;
  /// Copies the whole blob (blob_size bytes, slots at their offsets) from host memory.
  virtual void upload_all(const void* host) = 0;
  virtual const void* slot_ptr(int slot) const = 0;
};

class DeviceRunner {
 public:
  virtual ~DeviceRunner() = default;
  /// Runs the graph on `inputs` (graph input tensor -> host view) and waits for it. Outputs
  /// are then host tensors of the runner (output()).
  virtual void run(const std::map<int, Weights>& inputs) = 0;
  virtual Weights output(int tensor) const = 0;
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

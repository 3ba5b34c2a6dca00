#pragma once
// Engine internals shared by the engine, its contexts and the refitter.

#include <atomic>
#include <map>
#include <shared_mutex>
#include <string>
#include <vector>

#include "bindery/engine.h"
#include "runtime/device_runner.h"

namespace bindery {

struct Engine::Impl {
  Device device;
  PlanMetadata meta;
  HostTensor arena;  // CPU engines: all slots, at their blob offsets; never reallocated
  std::vector<bool> slot_filled;  // false for slots a stripped plan left empty
  std::atomic<uint64_t> version{0};
  // Runs hold it shared, a refit's commit exclusively: a run sees the weights of one version
  // only, never some slots old and some new (refit while serving).
  mutable std::shared_mutex weights_mutex;
  // Delta refit: hash64 of the bytes last applied per source name (REFIT_IDENTICAL plans start
  // with their build's hashes). Guarded by weights_mutex.
  std::map<std::string, uint64_t> source_hashes;
  // CUDA engines: the slots, in device memory only (no host copy: `arena` stays empty).
  std::unique_ptr<DeviceSlots> device_slots;

  bool on_device() const { return device_slots != nullptr; }
  /// CUDA engines: makes the device slots and copies the plan's filled slots into them.
  void upload(const Plan& plan);
  /// Slot `i` where it lives: host memory, or device memory for CUDA engines.
  Weights slot_weights(int i) const;
  /// A host copy of slot `i` (a download for CUDA engines).
  HostTensor slot_to_host(int i) const;
  /// CPU engines: the slot's bytes in the arena.
  std::byte* slot_ptr(int i) {
    return static_cast<std::byte*>(arena.data()) + meta.slots[i].offset;
  }
  const std::byte* slot_ptr(int i) const {
    return static_cast<const std::byte*>(arena.data()) + meta.slots[i].offset;
  }
  /// Names of slots that hold no data yet.
  std::vector<std::string> empty_slots() const;
};

}  // namespace bindery

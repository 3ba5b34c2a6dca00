#pragma once
// Copies into device memory at the speed of the bus: DeviceSlots::copy of CUDA engines (their
// creation and every refit go through it).
//
// Each copy's source is looked up once: device memory and pinned host memory are copied by the
// DMA engines straight away (in 64 MiB pieces over several streams; conversions run as a
// kernel); pageable host memory (a checkpoint's memory map, a HostTensor) is cut into 4 MiB
// chunks that worker threads copy into pinned staging buffers, two per worker, each sent on
// the worker's stream while the worker fills its other buffer. The staging buffers (8 MiB per
// worker, at most 16 workers: 128 MiB) are allocated once per device, on first use, and kept
// for the process; one transfer per device runs at a time.

#include <cstdint>
#include <span>
#include <string>

#include "bindery/device.h"
#include "runtime/device_runner.h"

namespace bindery {

/// Runs `copies` into memory of `device` and returns when all landed (DeviceSlots::copy).
void copy_to_device(Device device, std::span<const DeviceCopy> copies, const std::string& what);

/// Tests only: the chunk after the next `chunks` chunks sent to any device throws kDEVICE
/// ("injected failure"), once; -1 (the default) never.
void fail_transfer_after_chunks_for_testing(int64_t chunks);

}  // namespace bindery

#pragma once
// Communicator: one rank's handle on a tensor-parallel group. An execution context runs its
// engine's collective layers (kALL_REDUCE, kALL_GATHER) through it; every rank runs the same
// collectives in the same order, each call returning once all ranks have made it.
//
// make_in_process_group gives the ranks of a group whose engines run in threads of one
// process (the CPU tensor-parallel executor); a multi-GPU backend implements the same
// interface over NCCL.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "bindery/dims.h"

namespace bindery {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  /// out[i] = Σ over ranks r of in_r[i] (f32, `count` elements each), summed in rank order so
  /// every rank gets the same bits. `out` may be `in`.
  virtual void all_reduce_sum(const float* in, float* out, int64_t count) = 0;
  /// out = every rank's `in` (row-major f32 of `dims`, the same on every rank) concatenated
  /// along `axis` in rank order: dims[axis] * size() along it.
  virtual void all_gather(const float* in, const Dims& dims, int axis, float* out) = 0;
  /// Fails the group: every collective a rank is blocked in, or enters later, throws
  /// Error(kABORTED) quoting `why`. A rank whose run fails calls it, so that the others
  /// stop waiting for it instead of hanging.
  virtual void abort(const std::string& why) = 0;
};

/// The `size` ranks (index = rank) of one in-process group. The group lives as long as any
/// of them. Throws kINVALID_ARGUMENT for size < 1.
std::vector<std::unique_ptr<Communicator>> make_in_process_group(int size);

}  // namespace bindery

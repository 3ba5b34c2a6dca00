#pragma once
// TensorParallelExecutor: runs the engines of a model split for tensor parallelism (one per
// rank, e.g. plans built with `bindery build --tp-size N`) as one model, in this process: one
// context per rank, each rank in its own thread, their collective layers (all_reduce,
// all_gather) meeting in an in-process group. Inputs are given once and read by every rank;
// outputs are rank 0's (after the final all_gather every rank holds the same).
//
// CPU engines only for now; a CUDA backend runs the same plans with an NCCL Communicator.

#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "bindery/engine.h"

namespace bindery {

class Communicator;

class TensorParallelExecutor {
 public:
  /// Borrows the engines, index = rank (they must outlive the executor). Throws
  /// kINVALID_ARGUMENT when they are not the ranks 0..N-1 of one split: an engine whose
  /// collectives expect another group size, engines whose graphs differ in their layers, or
  /// (plans that record it, property "tensor_parallel.rank") an engine at the wrong index.
  explicit TensorParallelExecutor(std::vector<Engine*> ranks);
  ~TensorParallelExecutor();
  TensorParallelExecutor(const TensorParallelExecutor&) = delete;
  TensorParallelExecutor& operator=(const TensorParallelExecutor&) = delete;

  int size() const;
  /// Rank `rank`'s context (for its debug tensors, or inputs that differ per rank).
  ExecutionContext& context(int rank);
  /// Binds input `name` of every rank to `view` (must stay valid until the run completes).
  void set_input(const std::string& name, const Weights& view);
  /// Runs every rank, one thread each, and returns when all are done. If a rank fails, the
  /// others are released from their collectives (kABORTED) and the failing rank's error is
  /// thrown; the KV caches of the sequences in that run are then undefined (reset them).
  void execute();
  /// Rank 0's output.
  Weights output(const std::string& name) const;
  /// Token selection by rank 0's context (every rank holds the same gathered logits).
  void set_token_selection(const std::string& name, std::optional<TokenSelection> selection);
  std::span<const int32_t> selected_tokens(const std::string& name) const;

  void reset_kv_cache();
  void reset_sequence(int64_t seq_id);
  int64_t sequence_length(int64_t seq_id) const;

 private:
  void connect();  // a fresh group (a failed run leaves the old one aborted)
  std::vector<Engine*> engines_;
  std::vector<std::unique_ptr<ExecutionContext>> contexts_;
  std::vector<std::unique_ptr<Communicator>> group_;
};

}  // namespace bindery

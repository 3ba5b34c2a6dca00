#pragma once
// GEMM tactics (TensorRT's builder timing): for every weight matmul of a plan and every bucket
// of token counts that prefill runs through cuBLASLt (decode steps of up to 8 tokens run
// bindery's own GEMV), the algorithms cuBLASLt proposes are timed on a GPU and the fastest is
// stored in the plan (property kGEMM_TACTICS_PROPERTY, JSON). CUDA engines made from the plan
// on a GPU of the same name, with the same cuBLASLt version, run those algorithms; elsewhere
// (or for a shape the plan has no tactic for) they take cuBLASLt's own first choice and say so
// once on the log. Refit never changes them: they depend on shapes and types only.

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "bindery/device.h"
#include "bindery/plan.h"

namespace bindery {

inline constexpr const char* kGEMM_TACTICS_PROPERTY = "cuda.gemm_tactics";

struct TacticOptions {
  /// Token counts timed: a run of m tokens uses the tactic of the smallest bucket >= m (the
  /// largest beyond the last). Buckets of 8 or fewer tokens are skipped (GEMV).
  std::vector<int64_t> token_buckets = {16, 64, 256, 1024, 2048, 4096};
  int candidates = 8;  // algorithms asked of cuBLASLt's heuristic per problem
  int repeats = 10;    // timed launches per candidate (after one warm-up)
  /// Called with (problems done, problems in all) as the timing goes.
  std::function<void(int64_t, int64_t)> progress;
};

struct TacticReport {
  int64_t problems = 0;                // (shape, bucket) pairs timed
  int64_t differs_from_heuristic = 0;  // where the fastest was not cuBLASLt's first choice
  double seconds = 0;
  double heuristic_ms = 0;  // sum over problems of the first choice's time
  double chosen_ms = 0;     // sum over problems of the chosen algorithm's time
  std::string device;
};

/// Times and stores the tactics of `plan`'s matmuls on `device` (replacing any it had).
/// Throws kDEVICE when the GPU is unavailable or this build has no CUDA backend, kUNSUPPORTED
/// when the plan's matmuls are not bf16 or f16.
TacticReport select_gemm_tactics(Plan& plan, Device device, const TacticOptions& options = {});

}  // namespace bindery

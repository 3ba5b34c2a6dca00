#pragma once
// Refit from a checkpoint on disk, for any engine: the weights named in the engine are looked
// up in a checkpoint (any layout io::CheckpointReader reads), viewed in place where their type
// is already the engine's and converted otherwise, and applied in one all-or-nothing refit. On
// a CUDA engine the views go from the checkpoint's memory map straight into device memory.
// (Llama-family checkpoints have refit_from_hf_checkpoint, which also maps Meta and GPTQ
// layouts and checks the architecture.)

#include <cstdint>
#include <map>
#include <string>

#include "bindery/engine.h"
#include "bindery/refitter.h"

namespace bindery::models {

struct RefitSummary {
  int64_t weights_set = 0;    // source weights given to the refitter
  int64_t slots_changed = 0;  // slots whose bytes differ after the refit; -1 on CUDA engines
                              // (counting would download every slot twice)
  int64_t slots_rewritten = 0;
  int64_t slots_total = 0;
  int64_t bytes_read = 0;
  double seconds = 0;  // the refit itself (Refitter::refit), after the checkpoint was opened
};

struct CheckpointRefitOptions {
  /// Engine weight name -> checkpoint tensor name, for names that differ (others are looked
  /// up as they are).
  std::map<std::string, std::string> name_map;
  RefitStaging staging = RefitStaging::kVALIDATE_FIRST;
  bool skip_unchanged = false;  // delta refit (Refitter::set_skip_unchanged)
};

/// Refits every refittable weight of `engine` from the checkpoint at `path`. kNOT_REFITTABLE
/// when the engine has no refittable weight; kNOT_FOUND listing every weight the checkpoint
/// lacks (under its mapped name); kSHAPE_MISMATCH / kDTYPE_MISMATCH naming the weight and the
/// checkpoint tensor and file. Nothing is changed on error.
RefitSummary refit_from_checkpoint(Engine& engine, const std::string& path,
                                   const CheckpointRefitOptions& options = {});

}  // namespace bindery::models

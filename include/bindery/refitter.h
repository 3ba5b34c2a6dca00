#pragma once
// Refitter (TensorRT's IRefitter): replaces an engine's weights without rebuilding it.
//
// Set new source weights by name, then refit(). Every recipe whose sources changed is replayed
// into staging memory; only when all of them succeeded are the slots overwritten, so a failed
// refit leaves the engine bit-for-bit as it was. Views passed to set_named_weights are
// borrowed until refit()/refit_async() has consumed them (refit_async: until the stream ran it).
// Not thread-safe; one refitter per engine at a time.
//
// CUDA engines keep their slots in device memory only. Their refit copies each source straight
// into its slot region: device views device-to-device (casts run on the GPU), pinned host views
// by DMA on several streams, pageable host views (a checkpoint's memory map, a HostTensor)
// through a ring of pinned staging buffers that many threads fill while earlier chunks are in
// flight. Recipes the GPU does not run (transposes, folded batch norms) are evaluated on the
// host and uploaded. RefitStaging says how a failure mid-transfer is kept from half-applying.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "bindery/engine.h"
#include "bindery/recipe.h"
#include "bindery/weights.h"

namespace bindery {

/// How a CUDA engine's refit keeps a failure from leaving some slots new and some old (CPU
/// engines always stage in host memory, as the class comment says).
enum class RefitStaging {
  /// Default. Every source is checked before the first slot is written (dtype, shape, and for
  /// device views that the whole range lies in one allocation of the engine's device), then
  /// sources are copied straight into the slots: no extra memory. Runs of the engine wait for
  /// the whole transfer. A failure of the copy itself (a device fault) can leave the slots
  /// partly written: the refit then throws kDEVICE saying so.
  kVALIDATE_FIRST,
  /// Sources are copied into spare device memory first (as many bytes as the rewritten slots),
  /// then into the slots by one device-to-device pass: any failure before that pass leaves the
  /// engine untouched, and runs wait only for the pass (milliseconds for an 8B model).
  kDEVICE_COPY,
};

class Refitter {
 public:
  explicit Refitter(Engine& engine);
  ~Refitter();
  Refitter(const Refitter&) = delete;
  Refitter& operator=(const Refitter&) = delete;

  /// Sets new values for source weight `name` (host or device view). Validated at once:
  /// kNOT_FOUND (no such weight), kNOT_REFITTABLE, kDTYPE_MISMATCH, kSHAPE_MISMATCH,
  /// kCOUNT_MISMATCH (elements differ from the prototype's), kIDENTICAL_MISMATCH
  /// (kREFIT_IDENTICAL and the data differ). Nothing is changed on error.
  void set_named_weights(const std::string& name, const Weights& weights);
  /// The one block of source `name` this engine reads, when it reads only part of it (a
  /// tensor-parallel rank's share of a full checkpoint tensor: its recipes slice it); nullopt
  /// when it reads all of it. kNOT_FOUND for unknown names.
  std::optional<SourceBlock> needed_block(const std::string& name) const;
  /// Sets only that block of source `name`: `weights` has the source's shape with
  /// dims[block.axis] = block.length, and is all the refit reads of it (a rank reads only its
  /// slice of the checkpoint). kINVALID_ARGUMENT when `block` is not needed_block(name) or the
  /// plan is REFIT_IDENTICAL (its hashes cover whole weights); otherwise as set_named_weights.
  void set_named_weights_block(const std::string& name, const SourceBlock& block,
                               const Weights& weights);
  /// Forgets weights set for `name`. False if none were set.
  bool unset_named_weights(const std::string& name);
  /// Source names that must still be set before refit() can succeed: every source of every
  /// slot that is touched by a set weight and cannot be updated partially, plus every source
  /// of slots that hold no data yet (stripped plans).
  std::vector<std::string> missing_weights() const;
  /// All refittable source names.
  std::vector<std::string> all_weights() const;
  /// dtype and shape set_named_weights expects for `name` (kNOT_FOUND otherwise).
  TensorDesc weights_prototype(const std::string& name) const;
  /// Reads source `name` back from what the engine holds (inverting its recipe). Throws
  /// kNOT_INVERTIBLE saying which step cannot be undone, kMISSING_WEIGHTS for empty slots.
  HostTensor get_named_weights(const std::string& name) const;

  /// Applies the weights set so far, all or nothing. Throws kMISSING_WEIGHTS listing the
  /// names (see missing_weights) or the first validation error; then nothing changed.
  /// On success the set weights are cleared and the engine's weights_version() increments.
  void refit();
  /// Validates and prepares now (throwing as refit() does), applies on `stream` after the
  /// work enqueued before. The set views must live until the stream has run the refit.
  void refit_async(Stream& stream);
  /// Slots rewritten by the last refit.
  int last_refit_slots() const;
  /// CUDA engines: see RefitStaging (kVALIDATE_FIRST unless set).
  void set_staging(RefitStaging staging);

  // ---- delta refit ----
  /// With `on`, refit() hashes every set source (hash64 of its bytes; whole sources in host or
  /// device memory) and skips those whose hash equals what the engine last applied for that
  /// name, for trainers that change only some layers (frozen embeddings, LoRA merges). The
  /// engine knows a source's hash once a delta refit has applied it (or, in REFIT_IDENTICAL
  /// plans, from the build); slots whose sources are all skipped are not touched. Off by
  /// default: hashing costs a read of every set source (last_refit_stats says how long). A
  /// CUDA engine hashes views of its own device on the GPU (another hash function than the
  /// host's, so a source moved between host and device memory counts as changed once).
  void set_skip_unchanged(bool on);
  struct Stats {
    int64_t sources_set = 0;      // weights given to the refit
    int64_t sources_skipped = 0;  // unchanged, not applied (delta refit)
    int64_t bytes_hashed = 0;
    double hash_seconds = 0;
    int64_t bytes_written = 0;  // slot bytes rewritten
    double seconds = 0;         // the whole refit (refit_async: until its work was queued)
  };
  const Stats& last_refit_stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace bindery

#pragma once
// Plan: everything an engine needs, as data. Graph + weight slots (with recipes) + the source
// weight table + the build report + the weight blob. Saved as one file:
//
//   header   magic "BINDERY\0", format version, builder flags, section table
//            (kind, offset, size, xxh3-64 checksum per section), header checksum
//   metadata JSON: graph, slots, recipes, sources (names, shapes, dtypes, hashes), report
//   weights  256-byte-aligned blob, memory-mappable; absent in a stripped plan
//
// Refused on load, each with its own code: not a plan (kBAD_MAGIC), a newer format
// (kVERSION_TOO_NEW), shorter than the header says (kTRUNCATED_FILE), a section whose checksum
// differs (kCHECKSUM_MISMATCH), well-formed bytes that describe an impossible plan
// (kCORRUPT_FILE).

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "bindery/builder_flags.h"
#include "bindery/graph.h"
#include "bindery/recipe.h"

namespace bindery {

// 2: decoder layers (rotary, attention, moe, matmul_int4) and plan properties.
// 3: tensor parallelism: all_reduce / all_gather layers, gather's index_offset.
// Older plans still load; a binary that knows an older version refuses newer ones as
// kVERSION_TOO_NEW.
inline constexpr uint32_t kPLAN_FORMAT_VERSION = 3;
inline constexpr int64_t kBLOB_ALIGNMENT = 256;

/// A weight as the user names it (what set_named_weights takes).
struct SourceWeight {
  std::string name;
  TensorDesc desc;
  bool refittable = false;
  std::optional<uint64_t> identical_hash;  // kREFIT_IDENTICAL: hash64 of the build's bytes
};

/// Engine-side storage of one weight tensor, in its final dtype and layout.
struct Slot {
  std::string name;
  TensorDesc desc;
  int64_t offset = 0;  // byte offset in the blob (kBLOB_ALIGNMENT-aligned)
  int64_t size_bytes = 0;
  bool refittable = false;  // its recipe is replayed on refit
  Recipe recipe;            // empty sources for a baked slot (folded at build, not refittable)
  uint64_t checksum = 0;    // hash64 of the slot's bytes as built / last refit
};

/// Something the builder did or gave up, for `inspect` and users who wonder why.
struct BuildReportEntry {
  std::string kind;                  // "fusion", "folding", "given_up", "cast"
  std::string description;           // "conv2d_0 + gelu_erf fused"
  std::vector<std::string> weights;  // weights involved (the refittable ones when given up)
};

struct PlanMetadata {
  BuilderFlags flags;
  Graph graph;
  std::vector<SourceWeight> sources;
  std::vector<Slot> slots;
  std::vector<BuildReportEntry> report;
  uint64_t weights_version = 0;  // incremented by every refit of an engine saved into a plan
  /// The format the plan was read from (kPLAN_FORMAT_VERSION for one built in this process);
  /// not stored in the metadata section: the file header carries it.
  uint32_t format_version = kPLAN_FORMAT_VERSION;
  bool stripped = false;   // refittable slots have no data in the blob
  bool refit_info = true;  // recipes and sources kept (SerializationOptions::include_refit)
  int64_t blob_size = 0;   // bytes the blob needs (even when stripped)
  /// Free-form facts about the model the plan was built from ("model.config": its config
  /// JSON, "model.family": "llama"), for the tools that run it.
  std::map<std::string, std::string> properties;

  int find_source(const std::string& name) const;
  int find_slot(const std::string& name) const;
};

struct SerializationOptions {
  /// Leave the data of refittable slots out (TensorRT's kEXCLUDE_WEIGHTS): a stripped plan.
  bool exclude_weights = false;
  /// Keep recipes and the source table, so the loaded engine stays refittable
  /// (TensorRT's kINCLUDE_REFIT). Without it the plan is frozen; excluding weights from a
  /// frozen plan is an error.
  bool include_refit = true;
};

class Plan {
 public:
  Plan();
  /// A plan whose blob is `blob` (kBLOB_ALIGNMENT-aligned, metadata.blob_size bytes, or empty
  /// for a stripped plan).
  Plan(PlanMetadata meta, HostTensor blob);
  ~Plan();
  Plan(Plan&&) noexcept;
  Plan& operator=(Plan&&) noexcept;

  const PlanMetadata& metadata() const { return meta_; }
  PlanMetadata& mutable_metadata() { return meta_; }
  /// Pointer to slot `i`'s bytes in the blob; nullptr if the plan has no data for it.
  const std::byte* slot_data(int i) const;
  bool has_blob() const;
  std::span<const std::byte> blob() const;

  /// The file image.
  std::vector<std::byte> serialize(const SerializationOptions& options = {}) const;
  /// Writes the file image atomically (temporary file + rename).
  void save(const std::string& path, const SerializationOptions& options = {}) const;
  /// Parses a file image; the blob is copied into owned aligned memory.
  static Plan from_memory(std::span<const std::byte> bytes);
  /// Maps the file; the blob is a copy-on-write mapping (no copy until a slot is written).
  static Plan load(const std::string& path);

 private:
  struct Storage;
  PlanMetadata meta_;
  std::unique_ptr<Storage> storage_;
};

}  // namespace bindery

#pragma once
// Internal: the plan's metadata section as JSON, and the checks that make a loaded plan safe to
// use. Format version 1; every name written here (layer types, ops, dtypes, tensor kinds) is part
// of the file format, independent of the display names in ops.h.
//
// Reading is hostile-input safe: every field is type-checked, every enum range-checked, every
// index bounds-checked, every size checked against overflow and the weights section. Each
// violation throws Error(kCORRUPT_FILE, "plan metadata: <json path>: <expected>, <found>"),
// e.g. "plan metadata: graph.nodes[3].inputs[1]: expected a tensor index in [-1, 12), found 40".

#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "bindery/plan.h"

namespace bindery::plan_json {

/// BuilderFlags bits this build knows (BuilderFlag values 0..5).
inline constexpr uint32_t kKNOWN_FLAG_BITS = 0x3f;
/// Upper bound on any byte count or element count a plan may state (1 PiB): keeps every size
/// computation far from int64 overflow.
inline constexpr int64_t kMAX_BYTES = int64_t{1} << 50;

/// The metadata as JSON. Does not validate (see validate()); throws Error(kINVALID_ARGUMENT)
/// only for values JSON cannot hold: an enum value out of range, params that do not match the
/// layer type.
nlohmann::json to_json(const PlanMetadata& meta);
/// Compact JSON text of to_json(meta); kINVALID_ARGUMENT if a string is not valid UTF-8.
std::string to_text(const PlanMetadata& meta);

/// Type- and range-checks `j` and builds the metadata; throws Error(kCORRUPT_FILE) naming the
/// path of the first bad field. Does not check cross references (see validate()).
PlanMetadata from_json(const nlohmann::json& j);
/// Parses JSON text (kCORRUPT_FILE on a syntax error, with its byte position) then from_json.
PlanMetadata from_text(std::string_view text);

/// Cross-reference checks of a parsed plan: indices (tensors in nodes and graph inputs/outputs,
/// slots of weight tensors, recipe step arguments and source indices, recipe source names),
/// slot offsets/sizes (aligned, inside blob_size, equal to the dtype size of their dims),
/// unique slot and source names, and that `weights_size` (bytes of the file's weights section,
/// 0 if it has none) is what the plan needs: blob_size for a full plan, stored_layout().size
/// for a stripped one. Throws Error(kCORRUPT_FILE).
void validate(const PlanMetadata& meta, int64_t weights_size);

/// Where the weights section of a stripped plan keeps each slot's bytes. A stripped plan stores
/// only the non-refittable slots, packed in slot order, each at a kBLOB_ALIGNMENT-aligned
/// offset of the section; refittable slots are not stored (offset -1). Slot::offset keeps its
/// meaning (the slot's place in the engine's full blob of blob_size bytes).
struct StoredLayout {
  std::vector<int64_t> offsets;  // per slot: byte offset in the weights section, or -1
  int64_t size = 0;              // bytes of the weights section (0: no weights section)
};
/// Expects slot sizes already checked (validate()); sizes saturate at kMAX_BYTES.
StoredLayout stripped_layout(const PlanMetadata& meta);

}  // namespace bindery::plan_json

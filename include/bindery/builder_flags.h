#pragma once
// BuilderFlag: TensorRT's builder flags, same meanings.

#include <cstdint>
#include <string>

namespace bindery {

enum class BuilderFlag : uint32_t {
  kREFIT = 0,             // every named weight is refittable
  kREFIT_INDIVIDUAL = 1,  // only weights marked with Network::mark_weights_refittable
  kREFIT_IDENTICAL = 2,   // refit only with the build's data (checked by hash); full optimisation
  kSTRIP_PLAN = 3,        // refittable weights are not stored in the plan
  kFP16 = 4,              // store float weights as f16
  kBF16 = 5,              // store float weights as bf16
};

struct BuilderFlags {
  uint32_t bits = 0;
  bool has(BuilderFlag f) const { return bits & (1u << static_cast<uint32_t>(f)); }
  void set(BuilderFlag f) { bits |= 1u << static_cast<uint32_t>(f); }
  void clear(BuilderFlag f) { bits &= ~(1u << static_cast<uint32_t>(f)); }
  /// True if any refit flag is set.
  bool refittable() const {
    return has(BuilderFlag::kREFIT) || has(BuilderFlag::kREFIT_INDIVIDUAL) ||
           has(BuilderFlag::kREFIT_IDENTICAL);
  }
  /// "REFIT|STRIP_PLAN" ("none" when empty).
  std::string to_string() const;
};

}  // namespace bindery

#include "bindery/builder_flags.h"

#include <array>
#include <string_view>

namespace bindery {

namespace {
// Indexed by BuilderFlag's value (its bit position).
constexpr std::array<std::string_view, 6> kFlagNames = {
    "REFIT", "REFIT_INDIVIDUAL", "REFIT_IDENTICAL", "STRIP_PLAN", "FP16", "BF16",
};
}  // namespace

std::string BuilderFlags::to_string() const {
  if (bits == 0) return "none";
  std::string s;
  for (uint32_t bit = 0; bit < 32; ++bit) {
    if (!(bits & (1u << bit))) continue;
    if (!s.empty()) s += '|';
    // A bit this build has no name for (a plan from a newer build) still shows up.
    s += bit < kFlagNames.size() ? std::string(kFlagNames[bit]) : "BIT" + std::to_string(bit);
  }
  return s;
}

}  // namespace bindery

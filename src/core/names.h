#pragma once
// "Did you mean" support for errors about unknown names (weights, tensors, parameters).

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace bindery {

/// Levenshtein distance.
size_t edit_distance(std::string_view a, std::string_view b);
/// Up to `max` candidates nearest to `wanted`, nearest first (ties keep their order).
std::vector<std::string> closest_names(std::string_view wanted,
                                       const std::vector<std::string>& candidates,
                                       size_t max = 3);

}  // namespace bindery

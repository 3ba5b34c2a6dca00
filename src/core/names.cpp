#include "core/names.h"

#include <algorithm>
#include <numeric>

namespace bindery {

size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  std::iota(row.begin(), row.end(), size_t{0});
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

std::vector<std::string> closest_names(std::string_view wanted,
                                       const std::vector<std::string>& candidates, size_t max) {
  std::vector<std::pair<size_t, size_t>> by_distance;  // (distance, index)
  by_distance.reserve(candidates.size());
  for (size_t i = 0; i < candidates.size(); ++i)
    by_distance.emplace_back(edit_distance(wanted, candidates[i]), i);
  const size_t n = std::min(max, by_distance.size());
  std::partial_sort(by_distance.begin(), by_distance.begin() + static_cast<ptrdiff_t>(n),
                    by_distance.end());
  std::vector<std::string> out;
  for (size_t i = 0; i < n; ++i) out.push_back(candidates[by_distance[i].second]);
  return out;
}

}  // namespace bindery

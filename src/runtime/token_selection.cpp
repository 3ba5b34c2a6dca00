#include "bindery/token_selection.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

#include "bindery/error.h"
#include "runtime/cuda/philox.h"

namespace bindery {

int32_t select_token(std::span<const float> logits, const TokenSelection& s, double u) {
  check(!logits.empty(), ErrorCode::kINVALID_ARGUMENT, "token selection: no logits");
  if (s.greedy())  // the first of the largest
    return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  std::vector<int32_t> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  // Descending by logit; ties by index, so the draw never depends on the sort's stability.
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    return logits[a] != logits[b] ? logits[a] > logits[b] : a < b;
  });
  size_t keep = order.size();
  if (s.top_k > 0) keep = std::min<size_t>(keep, static_cast<size_t>(s.top_k));
  std::vector<double> probs(keep);
  const double top = logits[order[0]];
  double sum = 0;
  for (size_t i = 0; i < keep; ++i)
    sum += probs[i] = std::exp((logits[order[i]] - top) / *s.temperature);
  if (s.top_p < 1.0f) {
    double cumulative = 0;
    for (size_t i = 0; i < keep; ++i) {
      cumulative += probs[i] / sum;
      if (cumulative >= s.top_p) {
        keep = i + 1;
        break;
      }
    }
    probs.resize(keep);
    sum = std::accumulate(probs.begin(), probs.end(), 0.0);
  }
  double r = u * sum;
  for (size_t i = 0; i < keep; ++i) {
    r -= probs[i];
    if (r < 0) return order[i];
  }
  return order[keep - 1];
}

double selection_uniform(const TokenSelection& s, int64_t row) {
  if (s.greedy() || s.seeds.empty()) return 0.0;
  return cuda::philox_uniform(s.seed(row), s.step, 0);
}

void check_token_selection(const TokenSelection& s, int64_t rows, const std::string& what) {
  check(!s.temperature || *s.temperature >= 0, ErrorCode::kINVALID_ARGUMENT,
        what + ": temperature must not be negative, got " +
            std::to_string(s.temperature.value_or(0)));
  check(s.top_k >= 0, ErrorCode::kINVALID_ARGUMENT,
        what + ": top_k must not be negative, got " + std::to_string(s.top_k));
  check(s.top_p > 0 && s.top_p <= 1, ErrorCode::kINVALID_ARGUMENT,
        what + ": top_p must be in (0, 1], got " + std::to_string(s.top_p));
  if (s.greedy() || rows < 0) return;
  check(s.seeds.size() == 1 || static_cast<int64_t>(s.seeds.size()) == rows,
        ErrorCode::kINVALID_ARGUMENT,
        what + ": a sampled selection needs one seed or one per row (" + std::to_string(rows) +
            " rows), got " + std::to_string(s.seeds.size()));
}

}  // namespace bindery

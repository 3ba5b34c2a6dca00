#pragma once
// Token selection from a logits output (ExecutionContext::set_token_selection): greedy, or a
// draw from softmax(logits / temperature) kept to the top_k largest logits and then to the
// smallest most-likely set reaching top_p (transformers' TopK then TopP warpers). A context
// selects where the run leaves the logits, so a CUDA context copies back one id per row
// instead of the rows themselves.
//
// Row r's draw uses u = Philox-4x32-10(key seeds[r], counter (step, 0)) (runtime/cuda/philox.h):
// a pure function of (seed, step), so a sequence draws the same tokens alone or in a batch,
// on every replay. CPU and CUDA contexts select the same greedy tokens; a sampled draw may
// differ between them where fp32 roundings of the probabilities straddle u.

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace bindery {

struct TokenSelection {
  /// nullopt or <= 0: greedy (the first of the largest logits).
  std::optional<float> temperature;
  int64_t top_k = 0;   // keep the k largest logits (0: all)
  float top_p = 1.0f;  // keep the smallest most-likely set whose probability reaches p (1: all)
  uint64_t step = 0;   // Philox counter of this draw (one per decode step)
  /// Philox key per row of the output; one value keys every row. Empty: greedy only.
  std::vector<uint64_t> seeds;

  bool greedy() const { return !temperature || !(*temperature > 0); }
  /// Row `row`'s key (seeds must fit the rows: check_token_selection).
  uint64_t seed(int64_t row) const {
    return seeds[seeds.size() == 1 ? 0 : static_cast<size_t>(row)];
  }
};

/// The host selection for one row given its uniform draw u in [0, 1).
int32_t select_token(std::span<const float> logits, const TokenSelection& selection, double u);

/// Row `row`'s uniform draw of `selection` (0 when greedy).
double selection_uniform(const TokenSelection& selection, int64_t row);

/// Throws kINVALID_ARGUMENT naming `what` when the settings are out of range or the seeds
/// do not fit `rows` rows (rows < 0: not checked).
void check_token_selection(const TokenSelection& selection, int64_t rows, const std::string& what);

}  // namespace bindery

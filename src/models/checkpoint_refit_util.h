#pragma once
// What refit_from_checkpoint and refit_from_hf_checkpoint share: the refitter set up from the
// options, the message listing names, and the refit itself with its summary.

#include <string>
#include <vector>

#include "bindery/models/checkpoint_refit.h"

namespace bindery::models {

/// "'a', 'b', ... (N more)": the first `limit` names, quoted.
std::string quoted_names(const std::vector<std::string>& names, size_t limit = 20);
/// Staging and delta refit as `options` say.
void configure(Refitter& refitter, const CheckpointRefitOptions& options);
/// Refits with what was set and fills the rest of `summary` (slots changed: CPU engines only).
RefitSummary apply_refit(Engine& engine, Refitter& refitter, RefitSummary summary);

}  // namespace bindery::models

#include "bindery/models/checkpoint_refit.h"

#include <optional>

#include "bindery/error.h"
#include "bindery/io/checkpoint_reader.h"
#include "models/checkpoint_refit_util.h"

namespace bindery::models {

std::string quoted_names(const std::vector<std::string>& names, size_t limit) {
  std::string out;
  for (size_t i = 0; i < names.size() && i < limit; ++i) out += (i ? ", '" : "'") + names[i] + "'";
  if (names.size() > limit) out += ", ... (" + std::to_string(names.size() - limit) + " more)";
  return out;
}

void configure(Refitter& refitter, const CheckpointRefitOptions& options) {
  refitter.set_staging(options.staging);
  refitter.set_skip_unchanged(options.skip_unchanged);
}

RefitSummary apply_refit(Engine& engine, Refitter& refitter, RefitSummary summary) {
  const int slots = static_cast<int>(engine.metadata().slots.size());
  const bool count_changes = engine.device().is_cpu();
  std::vector<uint64_t> before(count_changes ? slots : 0);
  for (int i = 0; i < static_cast<int>(before.size()); ++i) before[i] = engine.slot_checksum(i);
  refitter.refit();
  summary.slots_total = slots;
  summary.slots_rewritten = refitter.last_refit_slots();
  summary.seconds = refitter.last_refit_stats().seconds;
  summary.slots_changed = count_changes ? 0 : -1;
  for (int i = 0; i < static_cast<int>(before.size()); ++i)
    summary.slots_changed += engine.slot_checksum(i) != before[i];
  return summary;
}

RefitSummary refit_from_checkpoint(Engine& engine, const std::string& path,
                                   const CheckpointRefitOptions& options) {
  const io::CheckpointReader reader = io::CheckpointReader::open(path);
  Refitter refitter(engine);
  configure(refitter, options);
  const std::vector<std::string> names = refitter.all_weights();
  check(!names.empty(), ErrorCode::kNOT_REFITTABLE,
        "the engine has no refittable weights (build it with a refit flag)");
  const auto stored_name = [&](const std::string& n) {
    auto it = options.name_map.find(n);
    return it == options.name_map.end() ? n : it->second;
  };
  std::vector<std::string> missing;
  for (const std::string& n : names)
    if (!reader.contains(stored_name(n)))
      missing.push_back(stored_name(n) == n ? n : n + "' (as '" + stored_name(n) + "')");
  check(missing.empty(), ErrorCode::kNOT_FOUND,
        "checkpoint " + path + " lacks " + std::to_string(missing.size()) +
            " weight(s) the engine needs: " + quoted_names(missing));
  RefitSummary summary;
  std::vector<HostTensor> converted;
  for (const std::string& n : names) {
    const io::StoredTensor& t = reader.tensor(stored_name(n));
    const TensorDesc want = refitter.weights_prototype(n);
    const std::string where = "checkpoint tensor '" + t.name + "' in " + t.file;
    check(t.shape == want.dims, ErrorCode::kSHAPE_MISMATCH,
          "weights '" + n + "': expected shape " + to_string(want.dims) + ", " + where + " has " +
              to_string(t.shape));
    // In place when the stored type is the weight's and the tensor is contiguous; otherwise a
    // converted copy (read() names what cannot be converted).
    std::optional<Weights> view;
    if (t.is_contiguous() && to_data_type(t.dtype) == want.dtype) view = reader.view(t.name);
    if (!view) {
      try {
        converted.push_back(reader.read(t.name, want.dtype));
      } catch (const Error& e) {
        throw Error(e.code(), "weights '" + n + "' from " + where + ": " + e.message());
      }
      view = converted.back().view();
    }
    refitter.set_named_weights(n, *view);
    summary.bytes_read += t.size_bytes();
    ++summary.weights_set;
  }
  return apply_refit(engine, refitter, std::move(summary));
}

}  // namespace bindery::models

// bindery refit <plan> --from <model_dir> [-o <out_plan>] [--full]: new weights for a
// refittable Llama plan from a checkpoint directory of the same architecture (Hugging Face or
// Meta), saved in place or to -o.
//
// The plan file is written atomically (the whole plan is serialized in memory first, then a
// temporary file beside it is renamed over it), so a refit that fails (missing tensors, wrong
// shapes, ...) leaves the file as it was, byte for byte. A stripped plan stays stripped: it is
// the deployment form, whose weights come from a checkpoint at load time, and turning it into
// a full plan silently would put gigabytes where the user expects a few kilobytes. --full
// asks for exactly that (the refit weights written into the plan).

#include <cstdio>

#include "bindery/models/llama.h"
#include "commands.h"
#include "core/mapped_file.h"
#include "format.h"
#include "llama_common.h"

namespace bindery::cli {

Command add_refit(CLI::App& app) {
  struct Options {
    std::string plan, from, output;
    bool full = false;
  };
  auto o = std::make_shared<Options>();
  auto* cmd = app.add_subcommand(
      "refit", "Refit a Llama plan's weights from a checkpoint directory (atomic: all or nothing)");
  cmd->add_option("plan", o->plan, "Refittable plan file (bindery build --refit or --strip)")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--from", o->from,
                  "Checkpoint directory with the new weights (Hugging Face or Meta format)")
      ->required()
      ->check(CLI::ExistingDirectory);
  cmd->add_option("-o,--output", o->output, "Write the refit plan here (default: in place)");
  cmd->add_flag("--full", o->full,
                "Write the weights into the plan even when it was stripped (default: a stripped "
                "plan stays stripped)");
  return [o] {
    auto engine = Engine::load(o->plan);
    const bool was_stripped = engine->metadata().stripped;
    const auto start = Clock::now();
    const models::RefitSummary s = models::refit_from_hf_checkpoint(*engine, o->from);
    const double seconds = seconds_since(start);
    std::printf("refit %lld weights from %s: %lld of %lld slots changed, %s in %.2f s\n",
                static_cast<long long>(s.weights_set), o->from.c_str(),
                static_cast<long long>(s.slots_changed), static_cast<long long>(s.slots_total),
                human_bytes(s.bytes_read).c_str(), seconds);
    const bool strip = was_stripped && !o->full;
    const std::string& path = o->output.empty() ? o->plan : o->output;
    const std::vector<std::byte> bytes = engine->serialize({.exclude_weights = strip});
    write_file_atomic(path, bytes.data(), bytes.size());
    std::printf("wrote %s (%s, %s)\n", path.c_str(),
                human_bytes(static_cast<int64_t>(bytes.size())).c_str(),
                strip ? "stripped" : "with weights");
    return 0;
  };
}

}  // namespace bindery::cli

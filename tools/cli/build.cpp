// bindery build <model_dir> -o <plan> [--dtype float32|bfloat16|float16] [--refit | --strip]
// [--max-seq-len N]: builds a Llama-family checkpoint into a plan: a Hugging Face directory
// (config.json + weights, as transformers saves them) or a Meta one (params.json +
// consolidated.NN.pth, detected by itself). Progress goes to stderr when it is a terminal; the
// summary line to stdout.

#include <cstdio>
#include <filesystem>

#include "bindery/models/llama.h"
#include "commands.h"
#include "format.h"
#include "llama_common.h"

namespace bindery::cli {

Command add_build(CLI::App& app) {
  struct Options {
    std::string model_dir, output, dtype;
    bool refit = false, strip = false;
    int64_t max_seq_len = 0;
  };
  auto o = std::make_shared<Options>();
  auto* cmd = app.add_subcommand(
      "build", "Build a Llama-family checkpoint directory (Llama, Qwen2, Mistral) into a plan");
  cmd->add_option("model_dir", o->model_dir,
                  "Checkpoint directory: Hugging Face (config.json and the weights) or Meta "
                  "(params.json and consolidated.NN.pth)")
      ->required()
      ->check(CLI::ExistingDirectory);
  cmd->add_option("-o,--output", o->output, "Plan file to write")->required();
  cmd->add_option("--dtype", o->dtype, "Weight type in the engine (default: the config's dtype)")
      ->check(CLI::IsMember({"float32", "bfloat16", "float16"}));
  auto* refit = cmd->add_flag("--refit", o->refit, "Every weight refittable (BuilderFlag::kREFIT)");
  auto* strip = cmd->add_flag(
      "--strip", o->strip,
      "Refittable and stripped: the weights are left out of the plan (kREFIT + kSTRIP_PLAN)");
  refit->excludes(strip);
  strip->excludes(refit);
  cmd->add_option("--max-seq-len", o->max_seq_len,
                  "Longest sequence (KV cache size; default: max_position_embeddings)")
      ->check(CLI::PositiveNumber);
  return [o] {
    const auto start = Clock::now();
    models::LlamaBuildOptions options;
    if (!o->dtype.empty()) options.dtype = parse_dtype(o->dtype);
    options.refit = o->refit;
    options.strip = o->strip;
    options.max_seq_len = o->max_seq_len;
    Plan plan;
    {
      TtyProgress progress("build " + o->model_dir);
      progress.update("loading the checkpoint");
      options.progress = progress.callback();
      plan = models::build_llama(o->model_dir, options);
      progress.update("writing " + o->output);
      plan.save(o->output);
    }
    const PlanMetadata& m = plan.metadata();
    const auto dtype = m.properties.find("model.dtype");
    std::printf("built %s: %s, %s, %zu slots, %s of weights, %s, %.2f s\n", o->output.c_str(),
                human_bytes(static_cast<int64_t>(std::filesystem::file_size(o->output))).c_str(),
                dtype != m.properties.end() ? dtype->second.c_str() : "?", m.slots.size(),
                human_bytes(m.blob_size).c_str(),
                m.stripped ? "stripped" : (o->refit ? "full, refittable" : "full, frozen"),
                seconds_since(start));
    return 0;
  };
}

}  // namespace bindery::cli

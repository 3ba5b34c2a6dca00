// bindery build <model_dir> -o <plan> [--dtype float32|bfloat16|float16] [--refit | --strip]
// [--max-seq-len N] [--tp-size N [--tp-rank R]] [--device cuda[:i]]: builds a Llama-family
// checkpoint into a plan: a Hugging Face directory (config.json + weights, as transformers saves
// them) or a Meta one (params.json + consolidated.NN.pth, detected by itself). With --tp-size N the
// model is split for tensor parallelism: --tp-rank R writes that rank's plan to -o; without it
// every rank's plan is written, rank R's to <output stem>.rank<R><extension> (out.plan ->
// out.rank0.plan,
// ...). With --device cuda[:i] the plan's prefill GEMMs are timed on that GPU and the fastest
// cuBLASLt algorithms stored in it (bindery/gemm_tactics.h). Progress goes to stderr when it is a
// terminal; one summary line per plan to stdout.

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "bindery/error.h"
#include "bindery/gemm_tactics.h"
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
    int tp_size = 1, tp_rank = -1;
    std::string device;
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
  cmd->add_option("--tp-size", o->tp_size,
                  "Split the model for tensor parallelism over this many ranks (default 1)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--tp-rank", o->tp_rank,
                  "Build only this rank's plan, written to -o (default: every rank's, to "
                  "<stem>.rank<R><ext>)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--device", o->device,
                  "Time the prefill GEMMs on this GPU (cuda or cuda:i) and store the fastest "
                  "cuBLASLt algorithms in the plan (TensorRT's tactics)");
  return [o] {
    check(o->tp_rank < o->tp_size, ErrorCode::kINVALID_ARGUMENT,
          "--tp-rank " + std::to_string(o->tp_rank) + " is not a rank of --tp-size " +
              std::to_string(o->tp_size) + " (0.." + std::to_string(o->tp_size - 1) + ")");
    std::vector<std::pair<int, std::string>> outputs;  // rank, plan file
    if (o->tp_size == 1 || o->tp_rank >= 0) {
      outputs.push_back({std::max(o->tp_rank, 0), o->output});
    } else {
      const std::filesystem::path out(o->output);
      for (int r = 0; r < o->tp_size; ++r)
        outputs.push_back({r, (out.parent_path() / (out.stem().string() + ".rank" +
                                                    std::to_string(r) + out.extension().string()))
                                  .string()});
    }
    for (const auto& [rank, output] : outputs) {
      const auto start = Clock::now();
      models::LlamaBuildOptions options;
      if (!o->dtype.empty()) options.dtype = parse_dtype(o->dtype);
      options.refit = o->refit;
      options.strip = o->strip;
      options.max_seq_len = o->max_seq_len;
      options.mapping = {o->tp_size, rank};
      Plan plan;
      {
        TtyProgress progress("build " + o->model_dir);
        progress.update("loading the checkpoint");
        options.progress = progress.callback();
        plan = models::build_llama(o->model_dir, options);
        if (!o->device.empty()) {
          TacticOptions tactics;
          tactics.progress = [&](int64_t done, int64_t total) {
            progress.update("timing GEMM tactics", done, total);
          };
          const TacticReport r = select_gemm_tactics(plan, parse_device(o->device), tactics);
          std::printf(
              "tactics: %lld GEMM problems timed on %s in %.2f s; %lld differ from "
              "cuBLASLt's first choice (%.3f ms -> %.3f ms summed)\n",
              static_cast<long long>(r.problems), r.device.c_str(), r.seconds,
              static_cast<long long>(r.differs_from_heuristic), r.heuristic_ms, r.chosen_ms);
        }
        progress.update("writing " + output);
        plan.save(output);
      }
      const PlanMetadata& m = plan.metadata();
      const auto dtype = m.properties.find("model.dtype");
      const std::string split =
          o->tp_size == 1 ? ""
                          : ", rank " + std::to_string(rank) + " of " + std::to_string(o->tp_size);
      std::printf("built %s: %s, %s, %zu slots, %s of weights, %s%s, %.2f s\n", output.c_str(),
                  human_bytes(static_cast<int64_t>(std::filesystem::file_size(output))).c_str(),
                  dtype != m.properties.end() ? dtype->second.c_str() : "?", m.slots.size(),
                  human_bytes(m.blob_size).c_str(),
                  m.stripped ? "stripped" : (o->refit ? "full, refittable" : "full, frozen"),
                  split.c_str(), seconds_since(start));
    }
    return 0;
  };
}

}  // namespace bindery::cli

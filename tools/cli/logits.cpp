// bindery logits <plan>... (--tokens 1,2,3 | --prompt "text" [--tokenizer <file|dir>])
// [--weights <model_dir>] [--json]: the logits a Llama plan gives at every position of one
// sequence. --prompt is encoded with special tokens (BOS) by the tokenizer the plan carries, or
// the one --tokenizer names. --json prints {"logits": [[...], ...]} (one row of vocab floats
// per token, each printed so it parses back to the same float); the text form prints the argmax
// of each row.

#include <algorithm>
#include <cstdio>

#include "bindery/models/generation.h"
#include "commands.h"
#include "llama_common.h"

namespace bindery::cli {

Command add_logits(CLI::App& app) {
  struct Options {
    std::vector<std::string> plans;
    std::string device = "cpu";
    std::string tokens, prompt, tokenizer, weights;
    bool json = false;
  };
  auto o = std::make_shared<Options>();
  auto* cmd = app.add_subcommand("logits", "Run a Llama plan on a token list and print its logits");
  cmd->add_option("plan", o->plans,
                  "Plan file (built by bindery build); for a model split for tensor parallelism, "
                  "every rank's plan (run together in this process)")
      ->required()
      ->check(CLI::ExistingFile);
  auto* tokens = cmd->add_option("--tokens", o->tokens, "Token ids, comma-separated (e.g. 1,2,3)");
  auto* prompt = cmd->add_option("--prompt", o->prompt,
                                 "Text, encoded with special tokens by the plan's tokenizer");
  tokens->excludes(prompt);
  cmd->add_option("--tokenizer", o->tokenizer,
                  "tokenizer.json, or a directory with one, for --prompt (default: the plan's)")
      ->needs(prompt)
      ->check(CLI::ExistingPath);
  cmd->add_option("--device", o->device, "Where the engine runs: cpu (default), cuda or cuda:N");
  cmd->add_option("--weights", o->weights,
                  "Refit the plan from this checkpoint directory first (needed for stripped "
                  "plans)")
      ->check(CLI::ExistingDirectory);
  cmd->add_flag("--json", o->json, "Print {\"logits\": [[...] one row per position]}");
  return [o, tokens, prompt] {
    std::vector<int32_t> ids;  // --tokens are checked before the plan loads
    if (prompt->count() == 0) ids = prompt_tokens(o->tokens, tokens->count() > 0, "", nullptr);
    const auto ranks = load_llama_ranks(o->plans, o->weights, parse_device(o->device));
    Engine* engine = ranks[0].get();
    if (prompt->count() > 0) {
      const Tokenizer tokenizer = plan_tokenizer(engine->metadata(), o->plans[0], o->tokenizer);
      ids = prompt_tokens("", false, o->prompt, &tokenizer);
    }
    models::Generator generator(engine_pointers(ranks));
    const HostTensor logits = generator.logits(ids);
    const int64_t rows = logits.shape()[0], vocab = logits.shape()[1];
    const float* data = logits.data_as<float>();
    if (o->json) {
      nlohmann::json j = nlohmann::json::array();
      for (int64_t r = 0; r < rows; ++r) {
        nlohmann::json row = nlohmann::json::array();
        for (int64_t v = 0; v < vocab; ++v) row.push_back(static_cast<double>(data[r * vocab + v]));
        j.push_back(std::move(row));
      }
      print_json({{"logits", std::move(j)}});
      return 0;
    }
    std::printf("%lld positions x %lld logits\n", static_cast<long long>(rows),
                static_cast<long long>(vocab));
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = data + r * vocab;
      const auto best = std::max_element(row, row + vocab) - row;
      std::printf("  position %lld  token %d  argmax %lld  logit %.6g\n", static_cast<long long>(r),
                  ids[static_cast<size_t>(r)], static_cast<long long>(best), row[best]);
    }
    return 0;
  };
}

}  // namespace bindery::cli

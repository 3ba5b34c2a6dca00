// bindery generate <plan> --tokens 1,2,3 --max-new-tokens N [--temperature T --top-k K
// --top-p P --seed S] [--stop 2,3] [--weights <model_dir>] [--json]: continues a prompt with
// a Llama plan. Greedy unless --temperature is given (and > 0). There are no stop tokens by
// default (not even the config's eos_token_id): generation runs for N new tokens unless --stop
// names some. --json prints {"tokens": [prompt..., new...]}; the text form prints the same
// tokens separated by spaces.

#include <cstdio>

#include "bindery/models/generation.h"
#include "commands.h"
#include "llama_common.h"

namespace bindery::cli {

Command add_generate(CLI::App& app) {
  struct Options {
    std::string plan, tokens, weights, stop;
    int64_t max_new_tokens = 0;
    float temperature = 0, top_p = 1;
    int64_t top_k = 0;
    uint64_t seed = 0;
    bool json = false;
  };
  auto o = std::make_shared<Options>();
  auto* cmd = app.add_subcommand("generate", "Continue a token list with a Llama plan");
  cmd->add_option("plan", o->plan, "Plan file (built by bindery build)")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--tokens", o->tokens, "Prompt token ids, comma-separated (e.g. 1,2,3)")
      ->required();
  cmd->add_option("--max-new-tokens", o->max_new_tokens, "Tokens to generate after the prompt")
      ->required()
      ->check(CLI::NonNegativeNumber);
  auto* temperature =
      cmd->add_option("--temperature", o->temperature,
                      "Sample with this temperature (default: greedy; 0 is greedy too)")
          ->check(CLI::NonNegativeNumber);
  cmd->add_option("--top-k", o->top_k, "Sample from the k most likely tokens (0: all)")
      ->check(CLI::NonNegativeNumber)
      ->needs(temperature);
  cmd->add_option("--top-p", o->top_p,
                  "Sample from the smallest set of tokens whose probability reaches p (1: all)")
      ->check(CLI::Range(0.0f, 1.0f))
      ->needs(temperature);
  cmd->add_option("--seed", o->seed, "Seed of the sampler")->needs(temperature);
  auto* stop =
      cmd->add_option("--stop", o->stop,
                      "Stop after any of these token ids (kept in the output), comma-separated; "
                      "default: none, so N tokens are always generated");
  cmd->add_option("--weights", o->weights,
                  "Refit the plan from this checkpoint directory first (needed for stripped "
                  "plans)")
      ->check(CLI::ExistingDirectory);
  cmd->add_flag("--json", o->json, "Print {\"tokens\": [prompt and new tokens]}");
  return [o, temperature, stop] {
    const std::vector<int32_t> prompt = parse_token_list(o->tokens, "--tokens");
    models::SamplingConfig sampling;
    sampling.max_new_tokens = o->max_new_tokens;
    if (temperature->count() > 0) sampling.temperature = o->temperature;
    sampling.top_k = o->top_k;
    sampling.top_p = o->top_p;
    sampling.seed = o->seed;
    if (stop->count() > 0)
      for (int32_t t : parse_token_list(o->stop, "--stop")) sampling.stop_tokens.push_back(t);
    auto engine = load_llama_engine(o->plan, o->weights);
    models::Generator generator(*engine);
    std::vector<int32_t> tokens;
    {
      TtyProgress progress("generate");
      if (progress.enabled())
        generator.set_progress(
            [&](int64_t done) { progress.update("tokens", done, sampling.max_new_tokens); });
      tokens = generator.generate({prompt}, sampling)[0];
    }
    if (o->json) {
      print_json({{"tokens", tokens}});
      return 0;
    }
    for (size_t i = 0; i < tokens.size(); ++i) std::printf(i ? " %d" : "%d", tokens[i]);
    std::printf("\n");
    return 0;
  };
}

}  // namespace bindery::cli

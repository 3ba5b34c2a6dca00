// bindery generate <plan>... (--tokens 1,2,3 | --prompt "text" [--tokenizer <file|dir>])
// --max-new-tokens N [--temperature T --top-k K --top-p P --seed S] [--stop 2,3]
// [--weights <model_dir>] [--json] [--stats]: continues a prompt with a Llama plan. Greedy unless
// --temperature is given (and > 0). There are no stop tokens by default (not even the config's
// eos_token_id): generation runs for N new tokens unless --stop names some.
// --prompt is encoded with special tokens (BOS) by the tokenizer the plan carries (or the one
// --tokenizer names); the text form then prints the prompt and streams the new text as each
// token comes (special tokens left out). --json prints {"tokens": [prompt..., new...]}, with
// "text": the decode of them all (special tokens in) when there is a tokenizer; the text form
// of --tokens prints the tokens separated by spaces.

#include <chrono>
#include <cstdio>
#include <optional>

#include "bindery/models/generation.h"
#include "commands.h"
#include "llama_common.h"

namespace bindery::cli {

Command add_generate(CLI::App& app) {
  struct Options {
    std::vector<std::string> plans;
    std::string device = "cpu";
    std::string tokens, prompt, tokenizer, weights, stop;
    int64_t max_new_tokens = 0;
    float temperature = 0, top_p = 1;
    int64_t top_k = 0;
    uint64_t seed = 0;
    bool json = false, stats = false;
  };
  auto o = std::make_shared<Options>();
  auto* cmd = app.add_subcommand("generate", "Continue a token list with a Llama plan");
  cmd->add_option("plan", o->plans,
                  "Plan file (built by bindery build); for a model split for tensor parallelism, "
                  "every rank's plan (run together in this process)")
      ->required()
      ->check(CLI::ExistingFile);
  auto* tokens =
      cmd->add_option("--tokens", o->tokens, "Prompt token ids, comma-separated (e.g. 1,2,3)");
  auto* prompt = cmd->add_option(
      "--prompt", o->prompt, "Prompt text, encoded with special tokens by the plan's tokenizer");
  tokens->excludes(prompt);
  auto* tokenizer = cmd->add_option("--tokenizer", o->tokenizer,
                                    "tokenizer.json, or a directory with one (default: the plan's)")
                        ->check(CLI::ExistingPath);
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
  cmd->add_option("--device", o->device, "Where the engine runs: cpu (default), cuda or cuda:N");
  cmd->add_option("--weights", o->weights,
                  "Refit the plan from this checkpoint directory first (needed for stripped "
                  "plans)")
      ->check(CLI::ExistingDirectory);
  cmd->add_flag("--stats", o->stats,
                "Print the prompt and decode speed on stderr when done (tokens, seconds, tok/s)");
  cmd->add_flag("--json", o->json,
                "Print {\"tokens\": [prompt and new tokens], \"text\": ...} (text: with a "
                "tokenizer)");
  return [o, temperature, stop, tokens, prompt, tokenizer] {
    std::vector<int32_t> ids;  // --tokens are checked before the plan loads
    if (prompt->count() == 0) ids = prompt_tokens(o->tokens, tokens->count() > 0, "", nullptr);
    models::SamplingConfig sampling;
    sampling.max_new_tokens = o->max_new_tokens;
    if (temperature->count() > 0) sampling.temperature = o->temperature;
    sampling.top_k = o->top_k;
    sampling.top_p = o->top_p;
    sampling.seed = o->seed;
    if (stop->count() > 0)
      for (int32_t t : parse_token_list(o->stop, "--stop")) sampling.stop_tokens.push_back(t);
    const auto ranks = load_llama_ranks(o->plans, o->weights, parse_device(o->device));
    Engine* engine = ranks[0].get();
    std::optional<Tokenizer> tok;
    if (prompt->count() > 0 || tokenizer->count() > 0)
      tok = plan_tokenizer(engine->metadata(), o->plans[0], o->tokenizer);
    if (prompt->count() > 0) ids = prompt_tokens("", false, o->prompt, &*tok);
    models::Generator generator(engine_pointers(ranks));
    // Prefill ends with the first new token; every later step decodes one.
    std::vector<std::chrono::steady_clock::time_point> steps;
    generator.set_progress([&](int64_t) { steps.push_back(std::chrono::steady_clock::now()); });
    const auto start = std::chrono::steady_clock::now();
    const auto print_stats = [&] {
      if (!o->stats || steps.empty()) return;
      const auto secs = [](auto a, auto b) { return std::chrono::duration<double>(b - a).count(); };
      const double prefill = secs(start, steps.front()), decode = secs(steps.front(), steps.back());
      std::fprintf(stderr, "[prompt %zu tokens in %.3f s; %zu new tokens, %.1f tok/s decoding]\n",
                   ids.size(), prefill, steps.size(),
                   steps.size() > 1 ? static_cast<double>(steps.size() - 1) / decode : 0.0);
    };
    const bool stream = prompt->count() > 0 && !o->json;
    std::vector<int32_t> out;
    if (stream) {
      // The prompt as the tokenizer reads it back, then the new text as it comes.
      Tokenizer::Decoder decoder(*tok, true);
      const auto print = [](const std::string& text) {
        std::fwrite(text.data(), 1, text.size(), stdout);
        std::fflush(stdout);
      };
      for (const int32_t id : ids) print(decoder.feed(id));
      generator.set_on_token([&](size_t, int32_t id) { print(decoder.feed(id)); });
      out = generator.generate({ids}, sampling)[0];
      print(decoder.flush() + "\n");
      print_stats();
      return 0;
    }
    {
      TtyProgress progress("generate");
      generator.set_progress([&](int64_t done) {
        steps.push_back(std::chrono::steady_clock::now());
        if (progress.enabled()) progress.update("tokens", done, sampling.max_new_tokens);
      });
      out = generator.generate({ids}, sampling)[0];
    }
    print_stats();
    if (o->json) {
      nlohmann::json j = {{"tokens", out}};
      if (tok) j["text"] = tok->decode(out, false);
      print_json(j);
      return 0;
    }
    for (size_t i = 0; i < out.size(); ++i) std::printf(i ? " %d" : "%d", out[i]);
    std::printf("\n");
    return 0;
  };
}

}  // namespace bindery::cli

// bindery tokenize <tokenizer.json | model_dir | plan> [--jsonl] [--add-special-tokens]
// [--decode [--skip-special-tokens]]: reads stdin one line at a time and prints, for each
// line, the JSON array of its token ids. With --jsonl each input line is a JSON string (so a
// text may hold newlines and tabs); without it the line itself is the text (its "\n" is not).
// --decode reads a JSON array of ids per line and prints the text as a JSON string. A line that
// fails stops the command with an error naming its number.

#include <algorithm>
#include <cstdint>
#include <iostream>
#include <string>

#include "bindery/error.h"
#include "commands.h"
#include "llama_common.h"

namespace bindery::cli {

Command add_tokenize(CLI::App& app) {
  struct Options {
    std::string tokenizer;
    bool jsonl = false, add_special_tokens = false, decode = false, skip_special_tokens = false;
  };
  auto o = std::make_shared<Options>();
  auto* cmd = app.add_subcommand(
      "tokenize", "Encode stdin lines to token ids (or --decode ids to text) with a tokenizer");
  cmd->add_option("tokenizer", o->tokenizer,
                  "tokenizer.json, a model directory with one, or a plan that carries one")
      ->required()
      ->check(CLI::ExistingPath);
  cmd->add_flag("--jsonl", o->jsonl, "Each input line is a JSON string");
  auto* special = cmd->add_flag("--add-special-tokens", o->add_special_tokens,
                                "Add the post-processor's special tokens (Llama: BOS)");
  auto* decode = cmd->add_flag("--decode", o->decode,
                               "Read a JSON array of ids per line; print the text as JSON");
  cmd->add_flag("--skip-special-tokens", o->skip_special_tokens,
                "With --decode: leave special tokens out of the text")
      ->needs(decode);
  special->excludes(decode);
  return [o] {
    const Tokenizer tokenizer = load_tokenizer(o->tokenizer);
    std::string line;
    for (size_t number = 1; std::getline(std::cin, line); ++number) {
      const std::string where = "stdin line " + std::to_string(number);
      nlohmann::json input;
      if (o->decode || o->jsonl) {
        try {
          input = nlohmann::json::parse(line);
        } catch (const nlohmann::json::parse_error& e) {
          throw Error(ErrorCode::kINVALID_ARGUMENT, where + " is not JSON: " + e.what());
        }
      }
      if (o->decode) {
        check(input.is_array() && std::all_of(input.begin(), input.end(),
                                              [](const auto& v) {
                                                return v.is_number_integer() &&
                                                       v.template get<int64_t>() >= INT32_MIN &&
                                                       v.template get<int64_t>() <= INT32_MAX;
                                              }),
              ErrorCode::kINVALID_ARGUMENT,
              where + ": expected a JSON array of token ids, found " + line.substr(0, 80));
        const auto ids = input.get<std::vector<int32_t>>();
        print_json(tokenizer.decode(ids, o->skip_special_tokens));
        continue;
      }
      if (o->jsonl)
        check(input.is_string(), ErrorCode::kINVALID_ARGUMENT,
              where + ": expected a JSON string (--jsonl), found " + line.substr(0, 80));
      try {
        print_json(
            tokenizer.encode(o->jsonl ? input.get<std::string>() : line, o->add_special_tokens));
      } catch (const Error& e) {  // name the line (what() starts with the code's name)
        const std::string message = e.what();
        throw Error(e.code(), where + ": " + message.substr(message.find(": ") + 2));
      }
    }
    return 0;
  };
}

}  // namespace bindery::cli

#pragma once
// The `bindery` CLI's subcommands. Each registers its options on the app and returns the
// function that runs it (exit code).

#include <CLI/CLI.hpp>
#include <functional>
#include <string>

namespace bindery::cli {

using Command = std::function<int()>;

Command add_inspect(CLI::App& app);
Command add_example(CLI::App& app);
Command add_build_example(CLI::App& app);
// The Llama family (llama_common.h holds what they share).
Command add_build(CLI::App& app);
Command add_logits(CLI::App& app);
Command add_generate(CLI::App& app);
Command add_refit(CLI::App& app);
// Text: tokenizer.json encode and decode.
Command add_tokenize(CLI::App& app);

/// `bindery inspect` on a checkpoint file or directory (exit code).
int inspect_checkpoint(const std::string& path, bool as_json);

}  // namespace bindery::cli

// bindery: build, run, refit and inspect inference engines.

#include <cstdio>
#include <map>

#include "bindery/error.h"
#include "commands.h"

int main(int argc, char** argv) {
  CLI::App app{"bindery: inference engines whose weights are bound, stripped and refit in seconds"};
  app.require_subcommand(1);
  std::map<CLI::App*, bindery::cli::Command> commands;
  auto add = [&](auto adder) {
    const size_t before = app.get_subcommands({}).size();
    auto run = adder(app);
    commands[app.get_subcommands({})[before]] = std::move(run);
  };
  add(bindery::cli::add_inspect);
  add(bindery::cli::add_example);
  add(bindery::cli::add_build_example);
  add(bindery::cli::add_build);
  add(bindery::cli::add_logits);
  add(bindery::cli::add_generate);
  add(bindery::cli::add_refit);
  add(bindery::cli::add_tokenize);
  CLI11_PARSE(app, argc, argv);
  try {
    for (auto& [sub, run] : commands)
      if (sub->parsed()) return run();
  } catch (const bindery::Error& e) {
    std::fprintf(stderr, "bindery: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bindery: internal error: %s\n", e.what());
    return 3;
  }
  return 0;
}

// bindery build-example <mlp|cnn> -o <plan> [flags]: builds a built-in example network into a
// plan file with any builder flags, for trying refit modes and for tests of the CLI.

#include <cstdio>
#include <sstream>

#include "bindery/builder.h"
#include "bindery/models/examples.h"
#include "commands.h"

namespace bindery::cli {

Command add_build_example(CLI::App& app) {
  struct Options {
    std::string network, output, mark;
    uint32_t seed = 1;
    bool refit = false, individual = false, identical = false, strip = false, fp16 = false,
         bf16 = false;
  };
  auto o = std::make_shared<Options>();
  auto* cmd = app.add_subcommand("build-example",
                                 "Build a built-in example network (mlp or cnn) into a plan");
  cmd->add_option("network", o->network, "mlp or cnn")
      ->required()
      ->check(CLI::IsMember({"mlp", "cnn"}));
  cmd->add_option("-o,--output", o->output, "Plan file to write")->required();
  cmd->add_option("--seed", o->seed, "Seed of the example weights")->capture_default_str();
  cmd->add_flag("--refit", o->refit, "BuilderFlag::kREFIT: every weight refittable");
  cmd->add_option(
      "--refit-individual", o->mark,
      "BuilderFlag::kREFIT_INDIVIDUAL with these weights marked refittable (comma-separated)");
  cmd->add_flag("--refit-identical", o->identical, "BuilderFlag::kREFIT_IDENTICAL");
  cmd->add_flag("--strip", o->strip, "BuilderFlag::kSTRIP_PLAN: leave refittable weights out");
  cmd->add_flag("--fp16", o->fp16, "Store float weights as f16");
  cmd->add_flag("--bf16", o->bf16, "Store float weights as bf16");
  return [o] {
    const examples::MlpConfig mc{.in = 64, .hidden = 256, .out = 64, .layers = 2};
    const examples::CnnConfig cc{};
    const auto weights = o->network == "mlp" ? examples::mlp_weights(mc, o->seed)
                                             : examples::cnn_weights(cc, o->seed);
    Network net = o->network == "mlp" ? examples::mlp_network(mc, weights)
                                      : examples::cnn_network(cc, weights);
    BuilderConfig cfg;
    if (o->refit) cfg.set_flag(BuilderFlag::kREFIT);
    if (o->identical) cfg.set_flag(BuilderFlag::kREFIT_IDENTICAL);
    if (o->strip) cfg.set_flag(BuilderFlag::kSTRIP_PLAN);
    if (o->fp16) cfg.set_flag(BuilderFlag::kFP16);
    if (o->bf16) cfg.set_flag(BuilderFlag::kBF16);
    if (!o->mark.empty()) {
      cfg.set_flag(BuilderFlag::kREFIT_INDIVIDUAL);
      std::stringstream names(o->mark);
      for (std::string n; std::getline(names, n, ',');)
        if (!net.mark_weights_refittable(n)) {
          std::fprintf(
              stderr,
              "bindery: error: --refit-individual: the %s network has no weights named '%s'\n",
              o->network.c_str(), n.c_str());
          return 2;
        }
    }
    const Plan plan = Builder().build(net, cfg);
    plan.save(o->output);
    std::printf("wrote %s (%s, %zu slots)\n", o->output.c_str(),
                plan.metadata().flags.to_string().c_str(), plan.metadata().slots.size());
    return 0;
  };
}

}  // namespace bindery::cli

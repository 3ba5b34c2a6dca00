// bindery example: the built-in demo until a real model ships. Builds a small MLP and CNN with
// REFIT, runs them, refits them with new weights, checks the result against a fresh build of
// the new weights, saves a stripped plan and refits that too, printing what happened.

#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>

#include "bindery/builder.h"
#include "bindery/error.h"
#include "bindery/models/examples.h"
#include "bindery/refitter.h"
#include "commands.h"

namespace bindery::cli {

namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

HostTensor run_once(Engine& engine, const std::string& input, const HostTensor& x,
                    const std::string& output) {
  auto ctx = engine.create_execution_context();
  ctx->set_input(input, x.view());
  ctx->execute();
  return HostTensor::copy_of(ctx->output(output));
}

bool same_bits(const HostTensor& a, const HostTensor& b) {
  return a.size_bytes() == b.size_bytes() && std::memcmp(a.data(), b.data(), a.size_bytes()) == 0;
}

struct Demo {
  std::string name, input, output;
  std::function<Network(const examples::WeightMap&)> network;
  examples::WeightMap a, b;
  HostTensor x;
};

int run_demo(Demo& d, bool quiet, const std::string& save_plan) {
  auto say = [&](const char* fmt, auto... args) {
    if (!quiet) std::printf(fmt, args...);
  };
  BuilderConfig cfg;
  cfg.set_flag(BuilderFlag::kREFIT);
  auto t0 = Clock::now();
  Plan plan = Builder().build(d.network(d.a), cfg);
  const double build_ms = ms_since(t0);
  const size_t full_bytes = plan.serialize().size();
  const size_t stripped_bytes = plan.serialize({.exclude_weights = true}).size();
  say("%s: built in %.1f ms: %zu layers, %zu slots, plan %zu B (stripped %zu B)\n", d.name.c_str(),
      build_ms, plan.metadata().graph.nodes.size(), plan.metadata().slots.size(), full_bytes,
      stripped_bytes);
  for (const auto& r : plan.metadata().report)
    say("  [%s] %s\n", r.kind.c_str(), r.description.c_str());
  if (!save_plan.empty()) {
    plan.save(save_plan);
    say("  saved %s\n", save_plan.c_str());
  }
  auto engine = Engine::create(std::move(plan));
  const HostTensor before = run_once(*engine, d.input, d.x, d.output);

  Refitter refitter(*engine);
  t0 = Clock::now();
  for (const auto& [name, w] : d.b) refitter.set_named_weights(name, w.view());
  refitter.refit();
  const double refit_ms = ms_since(t0);
  const HostTensor after = run_once(*engine, d.input, d.x, d.output);
  auto fresh = Engine::create(Builder().build(d.network(d.b), cfg));
  const HostTensor expected = run_once(*fresh, d.input, d.x, d.output);
  const bool exact = same_bits(after, expected);
  say("  refit %zu weights (%d slots) in %.2f ms; outputs changed: %s; equal to a fresh build: "
      "%s\n",
      d.b.size(), refitter.last_refit_slots(), refit_ms, same_bits(before, after) ? "no" : "yes",
      exact ? "bit-exact" : "NO");
  say("  %s[0, :4] before %.5f %.5f %.5f %.5f  after %.5f %.5f %.5f %.5f\n", d.output.c_str(),
      before.data_as<float>()[0], before.data_as<float>()[1], before.data_as<float>()[2],
      before.data_as<float>()[3], after.data_as<float>()[0], after.data_as<float>()[1],
      after.data_as<float>()[2], after.data_as<float>()[3]);

  // Deployment: a stripped plan refit from the weights at hand.
  auto stripped = Engine::create(Plan::from_memory(engine->serialize({.exclude_weights = true})));
  Refitter r2(*stripped);
  say("  stripped engine misses %zu weights; ", r2.missing_weights().size());
  for (const auto& [name, w] : d.b) r2.set_named_weights(name, w.view());
  r2.refit();
  const bool stripped_ok = same_bits(run_once(*stripped, d.input, d.x, d.output), expected);
  say("after refit: %s\n", stripped_ok ? "bit-exact" : "DIFFERENT");
  return exact && stripped_ok ? 0 : 1;
}

}  // namespace

Command add_example(CLI::App& app) {
  auto* cmd = app.add_subcommand("example",
                                 "Build, run and refit the built-in example networks (MLP, CNN)");
  auto save = std::make_shared<std::string>();
  auto quiet = std::make_shared<bool>(false);
  cmd->add_option("--save-plan", *save, "Also save the MLP's plan here");
  cmd->add_flag("--quiet,-q", *quiet,
                "Print nothing; the exit code says whether refit matched a fresh build");
  return [save, quiet] {
    const examples::MlpConfig mc{.in = 64, .hidden = 256, .out = 64, .layers = 2};
    const examples::CnnConfig cc{};
    Demo mlp{"mlp",
             "x",
             "y",
             [mc](const examples::WeightMap& w) { return examples::mlp_network(mc, w); },
             examples::mlp_weights(mc, 1),
             examples::mlp_weights(mc, 2),
             examples::random_tensor({4, mc.in}, 7, 1.f)};
    Demo cnn{"cnn",
             "image",
             "logits",
             [cc](const examples::WeightMap& w) { return examples::cnn_network(cc, w); },
             examples::cnn_weights(cc, 1),
             examples::cnn_weights(cc, 2),
             examples::random_tensor({2, 3, cc.image, cc.image}, 9, 1.f)};
    int rc = run_demo(mlp, *quiet, *save);
    rc |= run_demo(cnn, *quiet, "");
    return rc;
  };
}

}  // namespace bindery::cli

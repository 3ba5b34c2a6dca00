// Decode speed of a Llama-family model on the CPU at batch 1: builds the plan from a checkpoint
// directory, runs the prompt once, then times each new token. Prints one JSON object (tokens,
// prefill seconds, decode tokens/s); bench/llama_decode_bench.py runs it beside transformers.
//
//   bench_llama_decode <model_dir> [--tokens 1,2,3] [--new 64] [--dtype float32]

#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "bench_util.h"
#include "bindery/engine.h"
#include "bindery/models/generation.h"
#include "bindery/models/llama.h"

using namespace bindery;
using namespace bindery::bench;

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s <model_dir> [--tokens 1,2,3] [--new N] [--dtype T]\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  std::vector<int32_t> prompt = {1, 306, 4658, 278, 6593, 310, 2834, 338};
  int64_t fresh = 64;
  DataType dtype = DataType::kFLOAT;
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string a = argv[i], v = argv[i + 1];
    if (a == "--tokens") {
      prompt.clear();
      std::stringstream ss(v);
      for (std::string t; std::getline(ss, t, ',');) prompt.push_back(std::stoi(t));
    } else if (a == "--new") {
      fresh = std::stoll(v);
    } else if (a == "--dtype") {
      dtype = parse_dtype(v).value_or(DataType::kFLOAT);
    }
  }
  const auto t0 = Clock::now();
  auto engine = Engine::create(models::build_llama(dir, {.dtype = dtype}));
  const double build_s = seconds(t0, Clock::now());
  models::Generator gen(*engine);
  gen.generate({prompt}, {.max_new_tokens = 2});  // warm up (allocations, page faults)

  std::vector<Clock::time_point> steps;
  gen.set_progress([&](int64_t) { steps.push_back(Clock::now()); });
  const auto start = Clock::now();
  const auto out = gen.generate({prompt}, {.max_new_tokens = fresh})[0];
  // Step 1 ends with the prefill's token; each later step is one decode.
  const double prefill_s = seconds(start, steps.front());
  const double decode_s = seconds(steps.front(), steps.back());
  const nlohmann::json j = {{"tokens", out},
                            {"build_s", build_s},
                            {"prefill_s", prefill_s},
                            {"decode_tokens", steps.size() - 1},
                            {"decode_s", decode_s},
                            {"decode_tok_s", (steps.size() - 1) / decode_s},
                            {"threads", num_threads()},
                            {"dtype", dtype_name(dtype)}};
  std::printf("%s\n", j.dump().c_str());
  return 0;
}

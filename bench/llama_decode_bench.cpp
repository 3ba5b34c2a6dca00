// Decode speed of a Llama-family model at batch 1, on the CPU or a GPU: builds the plan from a
// checkpoint directory, runs the prompt once, then times each new token; optionally the latency
// of one prefill of N tokens. Prints one JSON object (tokens, build and prefill seconds, decode
// tokens/s, GPU memory in use); bench/llama_decode_bench.py (CPU) and bench/cuda_decode_bench.py
// (GPU) run it beside transformers.
//
//   bench_llama_decode <model_dir> [--tokens 1,2,3 | --prompt-len N] [--new 64]
//                      [--dtype float32] [--device cpu|cuda[:i]] [--prefill N] [--max-seq-len N]

#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "bench_util.h"
#include "bindery/engine.h"
#include "bindery/models/generation.h"
#include "bindery/models/llama.h"
#include "core/device_memory.h"

using namespace bindery;
using namespace bindery::bench;

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s <model_dir> [--tokens 1,2,3] [--new N] [--dtype T]\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  std::vector<int32_t> prompt = {1, 306, 4658, 278, 6593, 310, 2834, 338};
  int64_t fresh = 64, prefill = 0, max_seq_len = 0;
  DataType dtype = DataType::kFLOAT;
  Device device = Device::cpu();
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
    } else if (a == "--prompt-len") {  // ids 1, then a fixed pseudo-random walk
      prompt.assign(1, 1);
      for (int64_t t = 1; t < std::stoll(v); ++t) prompt.push_back(1000 + (t * 7919) % 20000);
    } else if (a == "--prefill") {
      prefill = std::stoll(v);
    } else if (a == "--max-seq-len") {
      max_seq_len = std::stoll(v);
    } else if (a == "--device") {
      device = v == "cpu" ? Device::cpu() : Device::cuda(v.size() > 5 ? std::stoi(v.substr(5)) : 0);
    }
  }
  const int64_t memory_before = device.is_cpu() ? -1 : device_memory_in_use(device);
  const auto t0 = Clock::now();
  // CUDA: what models::build_llama_engine does, timed step by step: a stripped plan (the graph
  // alone), the engine, then one refit from the checkpoint that moves the weights.
  const bool gpu = !device.is_cpu();
  Plan plan = models::build_llama(dir, {.dtype = dtype, .strip = gpu, .max_seq_len = max_seq_len});
  const double plan_s = seconds(t0, Clock::now());
  auto engine = Engine::create(std::move(plan), device);
  const double create_s = seconds(t0, Clock::now()) - plan_s;
  double fill_s = 0;
  if (gpu) fill_s = models::refit_from_hf_checkpoint(*engine, dir).seconds;
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
  const auto decode_tokens = static_cast<int64_t>(steps.size()) - 1;
  gen.set_progress(nullptr);  // the prefill runs below are not decode steps
  double prefill_long_s = 0;
  if (prefill > 0) {  // time to the first token of a `prefill`-token prompt, best of 3
    std::vector<int32_t> ids(1, 1);
    for (int64_t t = 1; t < prefill; ++t) ids.push_back(1000 + (t * 104729) % 20000);
    gen.generate({ids}, {.max_new_tokens = 1});
    prefill_long_s = 1e30;
    for (int r = 0; r < 3; ++r) {
      const auto p0 = Clock::now();
      gen.generate({ids}, {.max_new_tokens = 1});
      prefill_long_s = std::min(prefill_long_s, seconds(p0, Clock::now()));
    }
  }
  const int64_t memory_after = device.is_cpu() ? -1 : device_memory_in_use(device);
  const nlohmann::json j = {
      {"tokens", out},
      {"device", device.to_string()},
      {"plan_s", plan_s},
      {"build_s", build_s},
      {"create_s", create_s},
      {"fill_s", fill_s},
      {"prefill_tokens", prefill},
      {"prefill_long_s", prefill_long_s},
      {"gpu_memory_in_use_gb", memory_after < 0 ? -1.0 : memory_after / 1e9},
      {"gpu_memory_engine_gb", memory_after < 0 ? -1.0 : (memory_after - memory_before) / 1e9},
      {"prefill_s", prefill_s},
      {"decode_tokens", decode_tokens},
      {"decode_s", decode_s},
      {"decode_tok_s", decode_tokens / decode_s},
      {"threads", num_threads()},
      {"dtype", dtype_name(dtype)}};
  std::printf("%s\n", j.dump().c_str());
  return 0;
}

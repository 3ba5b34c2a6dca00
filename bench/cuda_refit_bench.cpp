// Refit of a CUDA engine at the speed of the bus (issue 8): builds a refittable bf16 engine on
// cuda:0 from a checkpoint directory, then times refits of every weight from each kind of
// source beside the limits of the machine measured in the same run with the CUDA runtime.
// bench/cuda_refit_bench.py runs it beside PyTorch's loading paths.
//
//   bench_cuda_refit <ckpt_dir> [--repeat N] [--limit-gib G] [--max-seq-len N]
//
// Sources, each refit timed from the first set_named_weights to the return of refit() (the
// whole refit, nothing queued behind it), best and median of --repeat (3) after one warm-up:
//   page_cache   models::refit_from_hf_checkpoint(engine, dir): opens the checkpoint (its
//                files were just read, so they are in the page cache), sets, refits;
//   pinned       cudaHostAlloc copies of every source weight (read once, before timing);
//   pageable     HostTensor copies of the same;
//   device       cudaMalloc copies, one allocation per weight (a trainer's tensors);
//   device_copy  the same with RefitStaging::kDEVICE_COPY (staged in spare device memory);
//   delta        device copies with set_skip_unchanged: one layer's sources changed (layer 0
//                set from layer 1's tensors, then back), every source hashed.
// Limits: pinned host-to-device (best of one large copy, 1 GiB pieces on 2 streams and 64 MiB
// pieces on 4 streams), pageable host-to-device (one cudaMemcpy), device-to-device (bytes read
// plus written, as cuda_decode_bench.py's hbm_gb_s).
// Verification: before each source's warm-up every refittable slot is overwritten with 0xFF bytes
// (bf16 NaN), so the warm-up refit must rewrite all of them; after it and after the timed runs the
// logits of a short prompt must equal, bit for bit, those of the freshly built engine (the
// weights are the same values). "verified" says whether they did.
// Prints progress on stderr and one JSON object on the last line of stdout.

#include <cuda_runtime_api.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.h"
#include "bindery/engine.h"
#include "bindery/io/checkpoint_reader.h"
#include "bindery/models/generation.h"
#include "bindery/models/llama.h"
#include "bindery/refitter.h"
#include "core/device_memory.h"

using namespace bindery;
using namespace bindery::bench;
using nlohmann::json;

namespace {

constexpr int64_t kALIGN = 256;
const Device kGPU = Device::cuda(0);

void cuda_ok(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "bench_cuda_refit: %s: %s\n", what, cudaGetErrorString(e));
    std::exit(1);
  }
}

#define note(...) (std::fprintf(stderr, __VA_ARGS__), std::fflush(stderr))

double gb(int64_t bytes) { return static_cast<double>(bytes) / 1e9; }

json summary_of(std::vector<double> times) {
  std::sort(times.begin(), times.end());
  const size_t n = times.size();
  const double median = n % 2 ? times[n / 2] : (times[n / 2 - 1] + times[n / 2]) / 2;
  return {{"best_s", times.front()}, {"median_s", median}, {"times_s", times}};
}

json stats_json(const Refitter::Stats& s) {
  return {{"sources_set", s.sources_set},
          {"sources_skipped", s.sources_skipped},
          {"bytes_hashed", s.bytes_hashed},
          {"hash_seconds", s.hash_seconds},
          {"bytes_written", s.bytes_written},
          {"seconds", s.seconds},
          {"hash_gb_s", s.hash_seconds > 0 ? gb(s.bytes_hashed) / s.hash_seconds : 0.0}};
}

// Polls the device's memory in use from its own thread (cudaMemGetInfo), keeping the peak.
class MemorySampler {
 public:
  MemorySampler() : peak_(device_memory_in_use(kGPU)) {
    thread_ = std::thread([this] {
      cudaSetDevice(kGPU.index);
      while (!stop_) {
        peak_ = std::max<int64_t>(peak_, device_memory_in_use(kGPU));
        std::this_thread::sleep_for(std::chrono::microseconds(200));
      }
    });
  }
  int64_t stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    return peak_ = std::max<int64_t>(peak_, device_memory_in_use(kGPU));
  }
  ~MemorySampler() { stop(); }

 private:
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> peak_;
  std::thread thread_;
};

// Device memory limits: best GB/s of host-to-device copies of `bytes` from `src` into `dst`,
// cut into `piece`-byte copies spread round-robin over `streams` streams (wall time from the
// first copy queued to the last stream drained).
double h2d_gb_s(const void* src, void* dst, size_t bytes, size_t piece, int streams, int repeat) {
  std::vector<cudaStream_t> s(static_cast<size_t>(streams));
  for (auto& st : s) cuda_ok(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking), "stream");
  double best = 0;
  for (int r = 0; r < repeat; ++r) {
    cuda_ok(cudaDeviceSynchronize(), "sync");
    const auto t0 = Clock::now();
    size_t k = 0;
    for (size_t at = 0; at < bytes; at += piece, ++k)
      cuda_ok(cudaMemcpyAsync(static_cast<char*>(dst) + at, static_cast<const char*>(src) + at,
                              std::min(piece, bytes - at), cudaMemcpyHostToDevice, s[k % s.size()]),
              "host-to-device copy");
    for (auto st : s) cuda_ok(cudaStreamSynchronize(st), "sync");
    best = std::max(best, gb(static_cast<int64_t>(bytes)) / seconds(t0, Clock::now()));
  }
  for (auto st : s) cudaStreamDestroy(st);
  return best;
}

// Device-to-device: bytes read plus written per second, timed with events, best of `repeat`.
double d2d_gb_s(const void* src, void* dst, size_t bytes, int repeat) {
  cudaEvent_t a, b;
  cuda_ok(cudaEventCreate(&a), "event");
  cuda_ok(cudaEventCreate(&b), "event");
  cuda_ok(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToDevice), "warm-up copy");
  double best = 0;
  for (int r = 0; r < repeat; ++r) {
    cuda_ok(cudaEventRecord(a), "record");
    cuda_ok(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice), "device copy");
    cuda_ok(cudaEventRecord(b), "record");
    cuda_ok(cudaEventSynchronize(b), "sync");
    float ms = 0;
    cuda_ok(cudaEventElapsedTime(&ms, a, b), "elapsed");
    best = std::max(best, 2 * gb(static_cast<int64_t>(bytes)) / (ms / 1e3));
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return best;
}

// Every refittable source weight, in pinned, pageable and device memory.
struct Sources {
  std::vector<std::string> names;
  std::vector<TensorDesc> descs;
  std::vector<int64_t> offsets;  // into the pinned block
  int64_t bytes = 0;             // sum of the sources' bytes
  void* pinned = nullptr;        // one block, each source at its 256-aligned offset
  std::vector<HostTensor> pageable;
  std::vector<void*> device;  // one cudaMalloc per source
  double read_to_pinned_s = 0, read_to_pageable_s = 0, to_device_s = 0;

  Weights pinned_view(size_t i) const {
    return {descs[i].dtype, descs[i].dims, static_cast<char*>(pinned) + offsets[i]};
  }
  Weights pageable_view(size_t i) const { return pageable[i].view(); }
  Weights device_view(size_t i) const { return {descs[i].dtype, descs[i].dims, device[i], kGPU}; }
  ~Sources() {
    for (void* p : device) cudaFree(p);
    if (pinned) cudaFreeHost(pinned);
  }
};

void read_sources(Engine& engine, const std::string& dir, Sources& s) {
  {
    Refitter r(engine);
    s.names = r.all_weights();
    for (const auto& n : s.names) s.descs.push_back(r.weights_prototype(n));
  }
  const auto reader = io::CheckpointReader::open(dir);
  int64_t block = 0;
  for (size_t i = 0; i < s.names.size(); ++i) {
    const io::StoredTensor& t = reader.tensor(s.names[i]);
    if (t.shape != s.descs[i].dims) {
      note("bench_cuda_refit: %s: checkpoint shape differs from the engine's source\n",
           s.names[i].c_str());
      std::exit(1);
    }
    const int64_t b = dtype_bytes(s.descs[i].dtype, volume(s.descs[i].dims));
    s.offsets.push_back(block);
    block += (b + kALIGN - 1) / kALIGN * kALIGN;
    s.bytes += b;
  }
  note("sources: %zu weights, %.3f GB; allocating %.3f GB of pinned memory...\n", s.names.size(),
       gb(s.bytes), gb(block));
  cuda_ok(cudaHostAlloc(&s.pinned, static_cast<size_t>(block), cudaHostAllocDefault),
          "cudaHostAlloc of the pinned sources");
  std::vector<io::ReadTarget> targets;
  for (size_t i = 0; i < s.names.size(); ++i)
    targets.push_back({s.names[i], static_cast<char*>(s.pinned) + s.offsets[i],
                       dtype_bytes(s.descs[i].dtype, volume(s.descs[i].dims)), s.descs[i].dtype});
  auto t0 = Clock::now();
  reader.read_into(targets);
  s.read_to_pinned_s = seconds(t0, Clock::now());

  t0 = Clock::now();
  s.pageable.reserve(s.names.size());
  for (size_t i = 0; i < s.names.size(); ++i) {
    s.pageable.emplace_back(s.descs[i].dtype, s.descs[i].dims);
    targets[i].dst = s.pageable.back().data();
  }
  reader.read_into(targets);
  s.read_to_pageable_s = seconds(t0, Clock::now());

  t0 = Clock::now();
  for (size_t i = 0; i < s.names.size(); ++i) {
    const auto b = static_cast<size_t>(targets[i].capacity);
    void* p = nullptr;
    cuda_ok(cudaMalloc(&p, b), "cudaMalloc of a device source");
    s.device.push_back(p);
    cuda_ok(cudaMemcpy(p, s.pinned_view(i).values, b, cudaMemcpyHostToDevice),
            "filling a device source");
  }
  s.to_device_s = seconds(t0, Clock::now());
  note("read into pinned %.2f s, into pageable %.2f s; device copies %.2f s\n", s.read_to_pinned_s,
       s.read_to_pageable_s, s.to_device_s);
}

// Overwrites every refittable slot of the engine with 0xFF (NaN in bf16), behind the engine's
// back: the next refit must rewrite every one of them for the logits to be right again. False
// when the engine's slots are not views of device memory.
bool poison_slots(const Engine& engine) {
  const auto& slots = engine.metadata().slots;
  for (size_t i = 0; i < slots.size(); ++i) {
    if (!slots[i].refittable || slots[i].recipe.sources.empty()) continue;
    Weights v;
    try {
      v = engine.slot_view(static_cast<int>(i));
    } catch (const std::exception& e) {
      note("(cannot view slot %s: %s) ", slots[i].name.c_str(), e.what());
      return false;
    }
    if (v.location != kGPU) return false;
    cuda_ok(cudaMemset(const_cast<void*>(v.values), 0xFF, static_cast<size_t>(v.size_bytes())),
            "poisoning a slot");
  }
  cuda_ok(cudaDeviceSynchronize(), "sync");
  return true;
}

struct Bench {
  Engine& engine;
  models::Generator& gen;
  const std::vector<int32_t>& prompt;
  const HostTensor& reference;
  int repeat;
  int64_t peak = 0;

  bool logits_match() {
    const HostTensor now = gen.logits(prompt);
    return now.size_bytes() == reference.size_bytes() &&
           std::memcmp(now.data(), reference.data(), static_cast<size_t>(now.size_bytes())) == 0;
  }

  // Poison, warm-up refit (sampling device memory), check, timed refits, check. `refit_once`
  // does one whole refit and returns what it wants reported of it. An error is reported in
  // the source's JSON ({"error": ..., "verified": false}); the next source's warm-up refit
  // rewrites every slot again.
  template <class Fn>
  json measure(const char* name, int64_t bytes, Fn&& refit_once) {
    note("refit from %s: ", name);
    try {
      return measure_or_throw(bytes, refit_once);
    } catch (const std::exception& e) {
      note("FAILED: %s\n", e.what());
      return {{"error", e.what()}, {"verified", false}};
    }
  }

  template <class Fn>
  json measure_or_throw(int64_t bytes, Fn& refit_once) {
    const bool poisoned = poison_slots(engine);
    MemorySampler sampler;
    json last = refit_once();
    const int64_t mode_peak = sampler.stop();
    peak = std::max(peak, mode_peak);
    bool verified = poisoned && logits_match();
    std::vector<double> times;
    for (int r = 0; r < repeat; ++r) {
      const auto t0 = Clock::now();
      last = refit_once();
      times.push_back(seconds(t0, Clock::now()));
    }
    verified = verified && logits_match();
    json j = summary_of(times);
    j["gb_s"] = gb(bytes) / j["best_s"].get<double>();
    j["verified"] = verified;
    j["slots_poisoned_before_warmup"] = poisoned;
    j["peak_gpu_gb"] = gb(mode_peak);
    j["last"] = last;
    note("best %.4f s (%.1f GB/s), median %.4f s, %s\n", j["best_s"].get<double>(),
         j["gb_s"].get<double>(), j["median_s"].get<double>(),
         verified ? "verified" : "NOT VERIFIED");
    return j;
  }
};

int run(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s <ckpt_dir> [--repeat N] [--limit-gib G] [--max-seq-len N]\n",
                 argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  int repeat = 3;
  double limit_gib = 4;
  int64_t max_seq_len = 256;
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string a = argv[i], v = argv[i + 1];
    if (a == "--repeat") {
      repeat = std::max(1, std::stoi(v));
    } else if (a == "--limit-gib") {
      limit_gib = std::stod(v);
    } else if (a == "--max-seq-len") {
      max_seq_len = std::stoll(v);
    } else {
      std::fprintf(stderr, "unknown option %s\n", a.c_str());
      return 2;
    }
  }
  // One sequence of max_seq_len per context: the KV cache stays small beside 3 copies of 16 GB.
  setenv("BINDERY_CUDA_MAX_SEQUENCES", "1", 0);
  if (!cuda_available()) {
    std::fprintf(stderr, "bench_cuda_refit: %s\n", cuda_unavailable_reason().c_str());
    return 1;
  }
  cudaDeviceProp prop{};
  cuda_ok(cudaGetDeviceProperties(&prop, kGPU.index), "cudaGetDeviceProperties");
  cuda_ok(cudaSetDevice(kGPU.index), "cudaSetDevice");
  cuda_ok(cudaFree(nullptr), "creating the CUDA context");  // not part of the build time
  const int64_t memory_before = device_memory_in_use(kGPU);

  // ---- build (the checkpoint's files are in the page cache: the script read them) ----
  note("building %s (bf16, refittable, max_seq_len %lld) on %s...\n", dir.c_str(),
       static_cast<long long>(max_seq_len), prop.name);
  models::LlamaBuildOptions options;
  options.dtype = DataType::kBF16;
  options.refit = true;
  options.max_seq_len = max_seq_len;
  std::vector<int32_t> prompt(1, 1);
  for (int t = 1; t < 8; ++t) prompt.push_back(1000 + (t * 7919) % 20000);
  // The engine as build_llama_engine makes it (a stripped plan filled by one refit from the
  // checkpoint): build_s. Then, for reference, from a full plan (its blob uploaded).
  auto tf = Clock::now();
  HostTensor fast_logits;
  double build_s = 0;
  {
    auto fast = models::build_llama_engine(dir, options, kGPU);
    build_s = seconds(tf, Clock::now());
    fast_logits = models::Generator(*fast).logits(prompt);
  }
  note("build_llama_engine (stripped plan + one refit from the checkpoint): %.2f s\n", build_s);
  const auto t0 = Clock::now();
  Plan plan = models::build_llama(dir, options);
  const double plan_s = seconds(t0, Clock::now());
  auto engine = Engine::create(std::move(plan), kGPU);
  const double build_full_plan_s = seconds(t0, Clock::now());
  const int64_t engine_bytes = device_memory_in_use(kGPU) - memory_before;
  note("full plan %.2f s, plan + engine %.2f s, engine %.2f GB of device memory\n", plan_s,
       build_full_plan_s, gb(engine_bytes));

  models::Generator gen(*engine);  // one context, made before every refit, used throughout
  const HostTensor reference = gen.logits(prompt);
  const bool build_verified = fast_logits.size_bytes() == reference.size_bytes() &&
                              std::memcmp(fast_logits.data(), reference.data(),
                                          static_cast<size_t>(reference.size_bytes())) == 0;

  Sources src;
  read_sources(*engine, dir, src);
  const size_t n = src.names.size();

  // ---- limits ----
  const auto limit_bytes = static_cast<size_t>(limit_gib * 1073741824.0);
  json limits;
  {
    const size_t bytes = std::min<size_t>(limit_bytes, static_cast<size_t>(src.bytes));
    void *d0 = nullptr, *d1 = nullptr;
    cuda_ok(cudaMalloc(&d0, bytes), "cudaMalloc for the limits");
    cuda_ok(cudaMalloc(&d1, bytes), "cudaMalloc for the limits");
    note("limits over %.2f GiB: ", bytes / 1073741824.0);
    const double one = h2d_gb_s(src.pinned, d0, bytes, bytes, 1, 3);
    const double two = h2d_gb_s(src.pinned, d0, bytes, size_t{1} << 30, 2, 3);
    const double four = h2d_gb_s(src.pinned, d0, bytes, size_t{64} << 20, 4, 3);
    std::unique_ptr<char[]> pageable(new char[bytes]);
    std::memset(pageable.get(), 1, bytes);  // touched: no page faults inside the copy
    const double pageable_gb_s = h2d_gb_s(pageable.get(), d0, bytes, bytes, 1, 3);
    pageable.reset();
    const double d2d = d2d_gb_s(d0, d1, bytes, 5);
    cuda_ok(cudaFree(d0), "cudaFree");
    cuda_ok(cudaFree(d1), "cudaFree");
    limits = {{"bytes", bytes},
              {"h2d_pinned_gb_s", std::max({one, two, four})},
              {"h2d_pinned_1_copy_gb_s", one},
              {"h2d_pinned_1gib_2_streams_gb_s", two},
              {"h2d_pinned_64mib_4_streams_gb_s", four},
              {"h2d_pageable_gb_s", pageable_gb_s},
              {"d2d_gb_s", d2d},
              {"d2d_how", "one cudaMemcpyAsync device-to-device, bytes read + written"}};
    note(
        "pinned H2D %.1f GB/s (1 copy %.1f, 2 streams %.1f, 4 streams %.1f), pageable H2D "
        "%.1f GB/s, D2D %.0f GB/s\n",
        std::max({one, two, four}), one, two, four, pageable_gb_s, d2d);
  }

  // ---- refits ----
  Bench bench{*engine, gen, prompt, reference, repeat};
  json refit;
  refit["page_cache"] = bench.measure("the page-cached checkpoint", src.bytes, [&] {
    const auto s = models::refit_from_hf_checkpoint(*engine, dir);
    return json{{"weights_set", s.weights_set},
                {"slots_rewritten", s.slots_rewritten},
                {"slots_total", s.slots_total},
                {"bytes_read", s.bytes_read},
                {"refit_seconds", s.seconds}};
  });
  const auto from_views = [&](const char* name, RefitStaging staging, auto view_of) {
    Refitter r(*engine);
    r.set_staging(staging);
    return bench.measure(name, src.bytes, [&] {
      for (size_t i = 0; i < n; ++i) r.set_named_weights(src.names[i], view_of(i));
      r.refit();
      json j = stats_json(r.last_refit_stats());
      j["slots_rewritten"] = r.last_refit_slots();
      return j;
    });
  };
  refit["pinned"] = from_views("pinned host tensors", RefitStaging::kVALIDATE_FIRST,
                               [&](size_t i) { return src.pinned_view(i); });
  refit["pageable"] = from_views("pageable host tensors", RefitStaging::kVALIDATE_FIRST,
                                 [&](size_t i) { return src.pageable_view(i); });
  refit["device"] = from_views("device tensors", RefitStaging::kVALIDATE_FIRST,
                               [&](size_t i) { return src.device_view(i); });
  refit["device_copy"] = from_views("device tensors, kDEVICE_COPY", RefitStaging::kDEVICE_COPY,
                                    [&](size_t i) { return src.device_view(i); });

  // ---- delta: layer 0's sources set from layer 1's tensors (same shapes), then back ----
  try {
    std::vector<size_t> swapped(n);
    int changed = 0;
    for (size_t i = 0; i < n; ++i) {
      swapped[i] = i;
      const std::string& name = src.names[i];
      const std::string l0 = "model.layers.0.";
      if (name.rfind(l0, 0) != 0) continue;
      const std::string twin = "model.layers.1." + name.substr(l0.size());
      for (size_t j = 0; j < n; ++j)
        if (src.names[j] == twin && src.descs[j] == src.descs[i]) {
          swapped[i] = j;
          ++changed;
        }
    }
    note("delta refit (layer 0 <-> layer 1, %d sources): ", changed);
    Refitter r(*engine);
    r.set_skip_unchanged(true);
    const auto sync = [&](bool swap) {
      for (size_t i = 0; i < n; ++i)
        r.set_named_weights(src.names[i], src.device_view(swap ? swapped[i] : i));
      r.refit();
    };
    auto t = Clock::now();
    sync(false);  // the engine learns every source's hash: everything applied and hashed
    const double first_s = seconds(t, Clock::now());
    const json first = stats_json(r.last_refit_stats());
    std::vector<double> times;
    json last;
    bool changed_outputs = false;
    for (int k = 0; k < 2 * repeat; ++k) {
      t = Clock::now();
      sync(k % 2 == 0);
      times.push_back(seconds(t, Clock::now()));
      last = stats_json(r.last_refit_stats());
      last["slots_rewritten"] = r.last_refit_slots();
      if (k == 0) changed_outputs = !bench.logits_match();
    }
    const bool verified = changed_outputs && bench.logits_match();
    json j = summary_of(times);
    j["sources_changed"] = changed;
    j["first_sync_s"] = first_s;
    j["first_sync"] = first;
    j["last"] = last;
    j["verified"] = verified;
    j["how"] =
        "set_skip_unchanged(true); every source set from device tensors, layer 0's from layer "
        "1's and back (norms are equal in a random checkpoint, so they are skipped too)";
    refit["delta_one_layer"] = j;
    note("best %.4f s, median %.4f s, %lld of %lld skipped, %s\n", j["best_s"].get<double>(),
         j["median_s"].get<double>(),
         static_cast<long long>(last["sources_skipped"].get<int64_t>()),
         static_cast<long long>(last["sources_set"].get<int64_t>()),
         verified ? "verified" : "NOT VERIFIED");
  } catch (const std::exception& e) {
    note("FAILED: %s\n", e.what());
    refit["delta_one_layer"] = {{"error", e.what()}, {"verified", false}};
  }

  bench.peak = std::max(bench.peak, device_memory_in_use(kGPU));
  bool verified = true;
  for (const auto& [k, v] : refit.items()) verified = verified && v["verified"].get<bool>();
  const json out = {
      {"benchmark", "cuda_refit"},
      {"device", std::string(prop.name)},
      {"date", utc_now()},
      {"commit", commit()},
      {"checkpoint", dir},
      {"sources", n},
      {"weights_bytes", src.bytes},
      {"weights_gb", gb(src.bytes)},
      {"repeat", repeat},
      {"max_seq_len", max_seq_len},
      {"plan_s", plan_s},
      {"build_s", build_s},
      {"build_full_plan_s", build_full_plan_s},
      {"build_verified", build_verified},
      {"read_to_pinned_s", src.read_to_pinned_s},
      {"read_to_pageable_s", src.read_to_pageable_s},
      {"limits", limits},
      {"refit", refit},
      {"gpu_memory_engine_gb", gb(engine_bytes)},
      {"peak_gpu_gb", gb(bench.peak)},
      {"verified", verified},
  };
  std::printf("%s\n", out.dump().c_str());
  return verified ? 0 : 3;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_cuda_refit: %s\n", e.what());
    return 1;
  }
}

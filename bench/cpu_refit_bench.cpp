// CPU refit throughput, printed beside memcpy bandwidth measured in the same run.
//
//   bench_cpu_refit [--gib 1.0] [--json out.json]
//
// Two networks of about --gib GiB of f32 weights each:
//   identity: a chain of square matmuls, every slot a plain copy of its source;
//   concat:   matmul pairs sharing an input (fused gate|up style), slots made by concat recipes.
// Each is built with REFIT, then refit from host memory (fresh buffers, so nothing is cached
// from the build). Throughput = source bytes / refit wall time. Best of --repeat runs.

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <string>
#include <vector>

#include "bench_util.h"
#include "bindery/builder.h"
#include "bindery/models/examples.h"
#include "bindery/refitter.h"

using namespace bindery;
using namespace bindery::bench;

namespace {

struct Weights2 {
  std::vector<std::string> names;
  std::vector<HostTensor> values;
  int64_t bytes = 0;
};

Weights2 make_weights(int count, int64_t dim, uint32_t seed) {
  Weights2 w;
  for (int i = 0; i < count; ++i) {
    w.names.push_back("w" + std::to_string(i));
    w.values.push_back(examples::random_tensor({dim, dim}, seed * 1000 + i, 0.01f));
    w.bytes += w.values.back().size_bytes();
  }
  return w;
}

Network chain(const Weights2& w, int64_t dim) {
  Network net;
  Tensor* x = net.add_input("x", DataType::kFLOAT, {kDYNAMIC, dim});
  for (size_t i = 0; i < w.names.size(); ++i)
    x = net.add_matmul(x, false, net.add_constant(w.values[i].view(), w.names[i])->output(0), true)
            ->output(0);
  x->set_name("y");
  net.mark_output(x);
  return net;
}

Network pairs(const Weights2& w, int64_t dim) {
  Network net;
  Tensor* x = net.add_input("x", DataType::kFLOAT, {kDYNAMIC, dim});
  for (size_t i = 0; i + 1 < w.names.size(); i += 2) {
    Tensor* a =
        net.add_matmul(x, false, net.add_constant(w.values[i].view(), w.names[i])->output(0), true)
            ->output(0);
    Tensor* b =
        net.add_matmul(x, false,
                       net.add_constant(w.values[i + 1].view(), w.names[i + 1])->output(0), true)
            ->output(0);
    x = net.add_elementwise(a, b, ElementwiseOp::kSUM)->output(0);
  }
  x->set_name("y");
  net.mark_output(x);
  return net;
}

double refit_gbps(Network (*make)(const Weights2&, int64_t), int count, int64_t dim, int repeat,
                  int* slots) {
  double best = 0;
  Weights2 a = make_weights(count, dim, 1);
  BuilderConfig cfg;
  cfg.set_flag(BuilderFlag::kREFIT);
  auto engine = Engine::create(Builder().build(make(a, dim), cfg));
  a = {};  // free the build's sources
  Weights2 b = make_weights(count, dim, 2);
  for (int r = 0; r < repeat; ++r) {
    Refitter refitter(*engine);
    const auto t0 = Clock::now();
    for (size_t i = 0; i < b.names.size(); ++i)
      refitter.set_named_weights(b.names[i], b.values[i].view());
    refitter.refit();
    const auto t1 = Clock::now();
    best = std::max(best, static_cast<double>(b.bytes) / seconds(t0, t1) / 1e9);
    *slots = refitter.last_refit_slots();
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  double gib = 1.0;
  int repeat = 3;
  std::string json_path;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--gib" && i + 1 < argc)
      gib = std::stod(argv[++i]);
    else if (a == "--repeat" && i + 1 < argc)
      repeat = std::stoi(argv[++i]);
    else if (a == "--json" && i + 1 < argc)
      json_path = argv[++i];
    else {
      std::fprintf(stderr, "usage: %s [--gib G] [--repeat N] [--json out.json]\n", argv[0]);
      return 2;
    }
  }
  const int64_t dim = 4096;  // 64 MiB per f32 weight
  const int count =
      std::max(2, static_cast<int>(gib * 1073741824.0 / (dim * dim * 4.0) + 0.5)) / 2 * 2;
  const int64_t bytes = count * dim * dim * 4;
  std::printf(
      "cpu refit benchmark: %d weights of f32[%lld, %lld], %.2f GiB, %d threads, best of %d\n",
      count, static_cast<long long>(dim), static_cast<long long>(dim), bytes / 1073741824.0,
      num_threads(), repeat);
  const double mc1 = memcpy_gbps(bytes, repeat, false);
  const double mcn = memcpy_gbps(bytes, repeat, true);
  int slots_id = 0, slots_cat = 0;
  const double id = refit_gbps(chain, count, dim, repeat, &slots_id);
  const double cat = refit_gbps(pairs, count, dim, repeat, &slots_cat);
  const double mc = std::max(mc1, mcn);
  std::printf("memcpy (1 thread)        %7.2f GB/s\n", mc1);
  std::printf("memcpy (%d threads)       %7.2f GB/s\n", num_threads(), mcn);
  std::printf("refit, identity recipes  %7.2f GB/s  (%d slots)  %.2f x memcpy\n", id, slots_id,
              id / mc);
  std::printf("refit, concat recipes    %7.2f GB/s  (%d slots)  %.2f x memcpy\n", cat, slots_cat,
              cat / mc);
  std::printf("goal: identity >= 0.5 x memcpy: %s\n", id >= 0.5 * mc ? "met" : "NOT met");
  if (!json_path.empty()) {
    std::ofstream out(json_path);
    out << "{\n  \"benchmark\": \"cpu_refit\",\n  \"device\": \"" << cpu_name() << " ("
        << num_threads() << " threads)\",\n  \"date\": \"" << utc_now() << "\",\n  \"commit\": \""
        << commit() << "\",\n  \"weight_bytes\": " << bytes
        << ",\n  \"memcpy_1thread_gbps\": " << mc1 << ",\n  \"memcpy_threads_gbps\": " << mcn
        << ",\n  \"refit_identity_gbps\": " << id << ",\n  \"refit_concat_gbps\": " << cat
        << ",\n  \"identity_vs_memcpy\": " << id / mc << "\n}\n";
  }
  return 0;
}

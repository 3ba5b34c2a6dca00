// select_gemm_tactics: times cuBLASLt's candidate algorithms for every (matmul shape, token
// bucket) of a plan on the GPU and stores the fastest in the plan.

#include "bindery/gemm_tactics.h"

#include <algorithm>
#include <chrono>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "bindery/error.h"
#include "runtime/cuda/cuda_check.h"
#include "runtime/gpu/gemm.h"

namespace bindery {
namespace {

using gpu::GemmAlgo;
using gpu::GemmProblem;

/// Device memory for the timing runs, freed on destruction.
struct Scratch {
  void* p = nullptr;
  Scratch(size_t bytes, const std::string& what) {
    cuda::check_cuda(cudaMalloc(&p, bytes),
                     "allocating " + what + " (" + std::to_string(bytes) + " bytes)");
    // Non-zero operands: tensor cores draw (and clock) differently on zeros. 0x3c3c is about
    // 0.0115 in bf16 and 1.06 in f16: no overflow over any k a plan has.
    cuda::check_cuda(cudaMemset(p, 0x3c, bytes), "filling " + what);
  }
  ~Scratch() { cudaFree(p); }
};

/// The plan's matmul problems (shape and types; m left 0), as the CUDA runner types them: the
/// weights' type in and out, f32 out for a graph output (the logits).
std::vector<GemmProblem> matmul_shapes(const PlanMetadata& plan) {
  const Graph& g = plan.graph;
  const std::set<int> outputs(g.outputs.begin(), g.outputs.end());
  std::set<std::tuple<DataType, DataType, int64_t, int64_t>> seen;
  std::vector<GemmProblem> out;
  for (const GraphNode& n : g.nodes) {
    if (n.type != LayerType::kMATMUL) continue;
    const int w = n.inputs[1];
    if (w < 0 || g.tensors[w].kind != TensorKind::kWEIGHT) continue;
    const TensorDesc& d = plan.slots[g.tensors[w].slot].desc;
    check(d.dtype == DataType::kBF16 || d.dtype == DataType::kHALF, ErrorCode::kUNSUPPORTED,
          "GEMM tactics are chosen for bf16 or f16 engines; matmul '" + n.name + "' has " +
              std::string(dtype_name(d.dtype)) + " weights (build with --dtype bfloat16)");
    if (d.dims.size() != 2) continue;
    const DataType c = outputs.count(n.outputs[0]) ? DataType::kFLOAT : d.dtype;
    if (seen.insert({d.dtype, c, d.dims[0], d.dims[1]}).second)
      out.push_back({d.dtype, c, 0, d.dims[0], d.dims[1]});
  }
  return out;
}

}  // namespace

TacticReport select_gemm_tactics(Plan& plan, Device device, const TacticOptions& options) {
  check(device.type == DeviceType::kCUDA, ErrorCode::kINVALID_ARGUMENT,
        "GEMM tactics are chosen on a CUDA device, got " + device.to_string());
  check(options.candidates >= 1 && options.repeats >= 1, ErrorCode::kINVALID_ARGUMENT,
        "tactic selection needs at least one candidate and one repeat");
  const auto start = std::chrono::steady_clock::now();
  cuda::check_cuda(cudaSetDevice(device.index), "selecting " + device.to_string());
  PlanMetadata& meta = plan.mutable_metadata();
  std::vector<int64_t> buckets;
  for (int64_t m : options.token_buckets)
    if (m > 8) buckets.push_back(m);  // up to 8 tokens run the GEMV
  std::sort(buckets.begin(), buckets.end());
  buckets.erase(std::unique(buckets.begin(), buckets.end()), buckets.end());
  if (auto it = meta.properties.find("model.max_seq_len"); it != meta.properties.end()) {
    // No run has more tokens than the cache holds; its own size is the last bucket.
    const int64_t longest = std::stoll(it->second);
    while (!buckets.empty() && buckets.back() > longest) buckets.pop_back();
    if (longest > 8 && (buckets.empty() || buckets.back() < longest)) buckets.push_back(longest);
  }
  const std::vector<GemmProblem> shapes = matmul_shapes(meta);
  TacticReport report;
  report.device = gpu::tactic_device_key(device.index);
  nlohmann::json entries = nlohmann::json::array();
  if (!shapes.empty() && !buckets.empty()) {
    int64_t max_k = 0, max_nk = 0, max_mn = 0;
    for (const GemmProblem& s : shapes) {
      max_k = std::max(max_k, s.k);
      max_nk = std::max(max_nk, s.n * s.k);
      max_mn = std::max(max_mn, s.n * (s.c == DataType::kFLOAT ? 2 : 1));
    }
    const int64_t m_max = buckets.back();
    Scratch x(static_cast<size_t>(m_max * max_k * 2), "the tactic timing's activations");
    Scratch w(static_cast<size_t>(max_nk * 2), "the tactic timing's weights");
    Scratch y(static_cast<size_t>(m_max * max_mn * 2), "the tactic timing's outputs");
    Scratch ws(gpu::kGEMM_WORKSPACE_BYTES, "the cuBLASLt workspace");
    cublasLtHandle_t lt = nullptr;
    gpu::cublaslt_ok(cublasLtCreate(&lt), "creating a cuBLASLt handle");
    cudaEvent_t begin = nullptr, end = nullptr;
    try {
      cuda::check_cuda(cudaEventCreate(&begin), "creating an event");
      cuda::check_cuda(cudaEventCreate(&end), "creating an event");
      const int64_t total = static_cast<int64_t>(shapes.size() * buckets.size());
      for (const GemmProblem& shape : shapes)
        for (int64_t m : buckets) {
          GemmProblem p = shape;
          p.m = m;
          const std::string what = "timing GEMM m=" + std::to_string(m) +
                                   " n=" + std::to_string(p.n) + " k=" + std::to_string(p.k);
          const gpu::GemmDescriptors d(p);
          const std::vector<GemmAlgo> candidates =
              gpu::heuristic_algos(lt, p, d, options.candidates);
          double best_ms = std::numeric_limits<double>::infinity(), first_ms = 0;
          size_t best = 0;
          for (size_t c = 0; c < candidates.size(); ++c) {
            const auto run = [&] {
              gpu::launch_gemm(lt, d, candidates[c], x.p, w.p, y.p, ws.p, nullptr, what);
            };
            run();  // warm-up (and the first launch's setup)
            cuda::check_cuda(cudaEventRecord(begin), what);
            for (int r = 0; r < options.repeats; ++r) run();
            cuda::check_cuda(cudaEventRecord(end), what);
            cuda::check_cuda(cudaEventSynchronize(end), what);
            float ms = 0;
            cuda::check_cuda(cudaEventElapsedTime(&ms, begin, end), what);
            const double each = ms / options.repeats;
            if (c == 0) first_ms = each;
            if (each < best_ms) best_ms = each, best = c;
          }
          report.heuristic_ms += first_ms;
          report.chosen_ms += best_ms;
          report.differs_from_heuristic += best != 0;
          ++report.problems;
          entries.push_back({{"ab", dtype_name(p.ab)},
                             {"c", dtype_name(p.c)},
                             {"m", m},
                             {"n", p.n},
                             {"k", p.k},
                             {"algo", gpu::algo_hex(candidates[best])},
                             {"workspace", candidates[best].workspace},
                             {"us", best_ms * 1e3},
                             {"heuristic_us", first_ms * 1e3}});
          if (options.progress) options.progress(report.problems, total);
        }
    } catch (...) {
      if (begin) cudaEventDestroy(begin);
      if (end) cudaEventDestroy(end);
      cublasLtDestroy(lt);
      throw;
    }
    cudaEventDestroy(begin);
    cudaEventDestroy(end);
    cublasLtDestroy(lt);
  }
  meta.properties[kGEMM_TACTICS_PROPERTY] =
      nlohmann::json{{"device", report.device}, {"entries", entries}}.dump();
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return report;
}

}  // namespace bindery

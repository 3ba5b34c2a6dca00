#include "runtime/gpu/gemm.h"

#include <cstdio>
#include <nlohmann/json.hpp>

#include "bindery/error.h"
#include "bindery/gemm_tactics.h"
#include "bindery/logging.h"

namespace bindery::gpu {
namespace {

cudaDataType_t cuda_type(DataType t) {
  switch (t) {
    case DataType::kBF16: return CUDA_R_16BF;
    case DataType::kHALF: return CUDA_R_16F;
    case DataType::kFLOAT: return CUDA_R_32F;
    default:
      throw Error(ErrorCode::kUNSUPPORTED,
                  "cuBLASLt GEMMs take bf16, f16 or f32, got " + std::string(dtype_name(t)));
  }
}

}  // namespace

std::string algo_hex(const GemmAlgo& algo) {
  std::string out;
  char buf[17];
  for (uint64_t v : algo.data) {
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
    out += buf;
  }
  return out;
}

namespace {

DataType dtype_of(const std::string& name, const std::string& what) {
  const auto t = parse_dtype(name);
  check(t.has_value(), ErrorCode::kCORRUPT_FILE, what + ": unknown type '" + name + "'");
  return *t;
}

std::array<uint64_t, 8> unhex(const std::string& s, const std::string& what) {
  check(s.size() == 128 && s.find_first_not_of("0123456789abcdef") == std::string::npos,
        ErrorCode::kCORRUPT_FILE,
        what + ": an algorithm is 128 lowercase hex digits, got '" + s + "'");
  std::array<uint64_t, 8> out{};
  for (size_t i = 0; i < 8; ++i) out[i] = std::stoull(s.substr(16 * i, 16), nullptr, 16);
  return out;
}

}  // namespace

void cublaslt_ok(cublasStatus_t s, const std::string& what) {
  if (s != CUBLAS_STATUS_SUCCESS)
    throw Error(ErrorCode::kDEVICE,
                what + ": cuBLASLt status " + std::to_string(static_cast<int>(s)));
}

GemmDescriptors::GemmDescriptors(const GemmProblem& p) {
  // Row-major y[m, n] = x[m, k] · w[n, k]ᵀ is column-major yᵀ[n, m] = w · xᵀ with w read as the
  // transpose of its column-major [k, n] view.
  const cudaDataType_t ab = cuda_type(p.ab), c_type = cuda_type(p.c);
  const std::string what = "setting up a cuBLASLt GEMM";
  try {
    cublaslt_ok(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F), what);
    const cublasOperation_t t = CUBLAS_OP_T, n = CUBLAS_OP_N;
    cublaslt_ok(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &t, sizeof t),
                what);
    cublaslt_ok(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &n, sizeof n),
                what);
    cublaslt_ok(cublasLtMatrixLayoutCreate(&a, ab, p.k, p.n, p.k), what);
    cublaslt_ok(cublasLtMatrixLayoutCreate(&b, ab, p.k, p.m, p.k), what);
    cublaslt_ok(cublasLtMatrixLayoutCreate(&c, c_type, p.n, p.m, p.n), what);
  } catch (...) {
    release();
    throw;
  }
}

GemmDescriptors::~GemmDescriptors() { release(); }

void GemmDescriptors::release() {
  if (c) cublasLtMatrixLayoutDestroy(c);
  if (b) cublasLtMatrixLayoutDestroy(b);
  if (a) cublasLtMatrixLayoutDestroy(a);
  if (op) cublasLtMatmulDescDestroy(op);
  op = nullptr, a = b = c = nullptr;
}

std::vector<GemmAlgo> heuristic_algos(cublasLtHandle_t lt, const GemmProblem& p,
                                      const GemmDescriptors& d, int count) {
  cublasLtMatmulPreference_t pref = nullptr;
  const std::string what = "asking cuBLASLt for algorithms (m=" + std::to_string(p.m) +
                           " n=" + std::to_string(p.n) + " k=" + std::to_string(p.k) + ")";
  cublaslt_ok(cublasLtMatmulPreferenceCreate(&pref), what);
  std::vector<cublasLtMatmulHeuristicResult_t> results(static_cast<size_t>(count));
  int returned = 0;
  const size_t ws = kGEMM_WORKSPACE_BYTES;
  cublasStatus_t s = cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
  if (s == CUBLAS_STATUS_SUCCESS)
    s = cublasLtMatmulAlgoGetHeuristic(lt, d.op, d.a, d.b, d.c, d.c, pref, count, results.data(),
                                       &returned);
  cublasLtMatmulPreferenceDestroy(pref);
  cublaslt_ok(s, what);
  std::vector<GemmAlgo> out;
  for (int i = 0; i < returned; ++i) {
    if (results[i].state != CUBLAS_STATUS_SUCCESS) continue;
    GemmAlgo g;
    static_assert(sizeof(g.data) == sizeof(results[i].algo.data));
    std::copy(std::begin(results[i].algo.data), std::end(results[i].algo.data), g.data.begin());
    g.workspace = results[i].workspaceSize;
    out.push_back(g);
  }
  check(!out.empty(), ErrorCode::kUNSUPPORTED, what + ": cuBLASLt has none");
  return out;
}

void launch_gemm(cublasLtHandle_t lt, const GemmDescriptors& d, const GemmAlgo& algo, const void* x,
                 const void* w, void* y, void* workspace, cudaStream_t stream,
                 const std::string& what) {
  cublasLtMatmulAlgo_t a;
  std::copy(algo.data.begin(), algo.data.end(), std::begin(a.data));
  const float alpha = 1.f, beta = 0.f;
  cublaslt_ok(cublasLtMatmul(lt, d.op, &alpha, w, d.a, x, d.b, &beta, y, d.c, y, d.c, &a, workspace,
                             algo.workspace, stream),
              what);
}

std::string tactic_device_key(int device) {
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, device) != cudaSuccess)
    throw Error(ErrorCode::kDEVICE, "reading the properties of cuda:" + std::to_string(device));
  return std::string(prop.name) + ", sm_" + std::to_string(prop.major) +
         std::to_string(prop.minor) + ", cuBLASLt " + std::to_string(cublasLtGetVersion());
}

Gemm::Gemm(const PlanMetadata& plan, int device) {
  cublaslt_ok(cublasLtCreate(&lt_), "creating a cuBLASLt handle");
  if (cudaMalloc(&workspace_, kGEMM_WORKSPACE_BYTES) != cudaSuccess) {
    release();
    throw Error(ErrorCode::kDEVICE, "allocating the cuBLASLt workspace (" +
                                        std::to_string(kGEMM_WORKSPACE_BYTES >> 20) + " MiB)");
  }
  auto it = plan.properties.find(kGEMM_TACTICS_PROPERTY);
  if (it == plan.properties.end()) return;
  const std::string what = std::string("the plan's property '") + kGEMM_TACTICS_PROPERTY + "'";
  try {
    const nlohmann::json j = nlohmann::json::parse(it->second);
    const std::string chosen_on = j.at("device").get<std::string>(),
                      here = tactic_device_key(device);
    std::map<Shape, std::map<int64_t, GemmAlgo>> table;
    for (const auto& e : j.at("entries")) {
      const Shape shape{dtype_of(e.at("ab").get<std::string>(), what),
                        dtype_of(e.at("c").get<std::string>(), what), e.at("n").get<int64_t>(),
                        e.at("k").get<int64_t>()};
      GemmAlgo algo{unhex(e.at("algo").get<std::string>(), what), e.at("workspace").get<size_t>()};
      check(algo.workspace <= kGEMM_WORKSPACE_BYTES, ErrorCode::kCORRUPT_FILE,
            what + ": an algorithm needs " + std::to_string(algo.workspace) +
                " bytes of workspace, more than the " + std::to_string(kGEMM_WORKSPACE_BYTES) +
                " tactics are chosen within");
      table[shape][e.at("m").get<int64_t>()] = algo;
    }
    if (chosen_on != here) {
      log_warning("the plan's GEMM tactics were chosen on " + chosen_on + "; this is " + here +
                  ": cuBLASLt's own choices are used instead (rebuild with --device here)");
      return;
    }
    tactics_ = std::move(table);
  } catch (const nlohmann::json::exception& e) {
    release();
    throw Error(ErrorCode::kCORRUPT_FILE, what + " does not parse: " + e.what());
  } catch (...) {
    release();
    throw;
  }
}

Gemm::~Gemm() { release(); }

void Gemm::release() {
  chosen_.clear();
  if (workspace_) cudaFree(workspace_);
  if (lt_) cublasLtDestroy(lt_);
  workspace_ = nullptr, lt_ = nullptr;
}

GemmAlgo Gemm::algo_for(const GemmProblem& p, const GemmDescriptors& d, const std::string& what) {
  if (auto it = tactics_.find({p.ab, p.c, p.n, p.k}); it != tactics_.end()) {
    // The smallest bucket holding m, else the largest.
    auto bucket = it->second.lower_bound(p.m);
    if (bucket == it->second.end()) --bucket;
    cublasLtMatmulAlgo_t a;
    std::copy(bucket->second.data.begin(), bucket->second.data.end(), std::begin(a.data));
    cublasLtMatmulHeuristicResult_t check_result{};
    if (cublasLtMatmulAlgoCheck(lt_, d.op, d.a, d.b, d.c, d.c, &a, &check_result) ==
            CUBLAS_STATUS_SUCCESS &&
        check_result.workspaceSize <= kGEMM_WORKSPACE_BYTES) {
      log_verbose(what + ": GEMM m=" + std::to_string(p.m) + " n=" + std::to_string(p.n) +
                  " k=" + std::to_string(p.k) +
                  " runs the plan's tactic for m<=" + std::to_string(bucket->first));
      return bucket->second;
    }
    if (!warned_)
      log_warning(what + ": the plan's tactic for m=" + std::to_string(bucket->first) +
                  " does not fit m=" + std::to_string(p.m) + "; using cuBLASLt's own choice");
    warned_ = true;
  }
  log_verbose(what + ": GEMM m=" + std::to_string(p.m) + " n=" + std::to_string(p.n) +
              " k=" + std::to_string(p.k) + " runs cuBLASLt's first choice (no tactic)");
  return heuristic_algos(lt_, p, d, 1).front();
}

void Gemm::run(const GemmProblem& p, const void* x, const void* w, void* y, cudaStream_t stream,
               const std::string& what) {
  auto key = std::make_tuple(p.ab, p.c, p.m, p.n, p.k);
  auto it = chosen_.find(key);
  if (it == chosen_.end()) {
    auto d = std::make_unique<GemmDescriptors>(p);
    const GemmAlgo algo = algo_for(p, *d, what);
    it = chosen_.emplace(key, Chosen{std::move(d), algo}).first;
  }
  launch_gemm(lt_, *it->second.descriptors, it->second.algo, x, w, y, workspace_, stream, what);
}

}  // namespace bindery::gpu

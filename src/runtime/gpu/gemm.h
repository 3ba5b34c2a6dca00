#pragma once
// The cuBLASLt GEMMs of CUDA engines (y[m, n] = x[m, k] · w[n, k]ᵀ, bf16/f16 in, fp32 compute)
// and their tactics (bindery/gemm_tactics.h): the algorithm a plan stores for a problem, else
// cuBLASLt's first choice, cached per problem.

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "bindery/dtype.h"
#include "bindery/plan.h"

namespace bindery::gpu {

/// One GEMM's operand types and sizes.
struct GemmProblem {
  DataType ab = DataType::kBF16;  // x and w
  DataType c = DataType::kBF16;   // y: ab or f32
  int64_t m = 0, n = 0, k = 0;
};

/// A cuBLASLt algorithm, as stored in a plan.
struct GemmAlgo {
  std::array<uint64_t, 8> data{};  // cublasLtMatmulAlgo_t's opaque bytes
  size_t workspace = 0;
};

/// The algorithm's bytes as the plan stores them (128 lowercase hex digits).
std::string algo_hex(const GemmAlgo& algo);

/// cuBLASLt's descriptors of a problem (RAII).
class GemmDescriptors {
 public:
  explicit GemmDescriptors(const GemmProblem& p);
  ~GemmDescriptors();
  GemmDescriptors(const GemmDescriptors&) = delete;
  GemmDescriptors& operator=(const GemmDescriptors&) = delete;
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;

 private:
  void release();
};

/// Workspace bytes every tactic is chosen within (and every engine context holds).
inline constexpr size_t kGEMM_WORKSPACE_BYTES = 32u << 20;

void cublaslt_ok(cublasStatus_t s, const std::string& what);

/// Up to `count` algorithms cuBLASLt proposes for `p` (whose descriptors `d` are), best guess
/// first.
std::vector<GemmAlgo> heuristic_algos(cublasLtHandle_t lt, const GemmProblem& p,
                                      const GemmDescriptors& d, int count);

/// Launches y = x · wᵀ with `algo` on `stream`.
void launch_gemm(cublasLtHandle_t lt, const GemmDescriptors& d, const GemmAlgo& algo, const void* x,
                 const void* w, void* y, void* workspace, cudaStream_t stream,
                 const std::string& what);

/// A device's identity for tactics: its name and the cuBLASLt version.
std::string tactic_device_key(int device);

/// The GEMMs of one CUDA context.
class Gemm {
 public:
  /// Reads the plan's tactics (kCORRUPT_FILE naming the property when they do not parse).
  Gemm(const PlanMetadata& plan, int device);
  ~Gemm();
  Gemm(const Gemm&) = delete;
  Gemm& operator=(const Gemm&) = delete;

  void run(const GemmProblem& p, const void* x, const void* w, void* y, cudaStream_t stream,
           const std::string& what);

 private:
  using Shape = std::tuple<DataType, DataType, int64_t, int64_t>;  // ab, c, n, k
  void release();
  GemmAlgo algo_for(const GemmProblem& p, const GemmDescriptors& d, const std::string& what);
  cublasLtHandle_t lt_ = nullptr;
  void* workspace_ = nullptr;
  std::map<Shape, std::map<int64_t, GemmAlgo>> tactics_;  // per shape: token bucket -> algo
  struct Chosen {
    std::unique_ptr<GemmDescriptors> descriptors;
    GemmAlgo algo;
  };
  // Per problem (ab, c, m, n, k): its descriptors and algorithm, made on first use.
  std::map<std::tuple<DataType, DataType, int64_t, int64_t, int64_t>, Chosen> chosen_;
  bool warned_ = false;
};

}  // namespace bindery::gpu

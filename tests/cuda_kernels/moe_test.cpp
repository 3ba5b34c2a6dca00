// The mixture-of-experts layer (moe.h) against host references.
//
// Routing: the experts must be exactly those of transformers' MixtralTopKRouter
// (tests/fixtures/llama/router_cases.json) and of the CPU kernel (cpu::detail::moe_route) on
// logits full of ties; the weights within 3 f32 ulps (exp may differ in the last bit).
//
// The layer: a host reference that routes with the CPU kernel and rounds where transformers
// rounds a bf16/f16 model (each projection's output in double then rounded, silu, silu·up, each
// weighted expert output, the running sum after each expert in increasing expert order).
// Tolerance: fp32 sums in another order may move any rounded intermediate by one step of the
// data type (rel = 2^-8 bf16, 2^-11 f16), so per output element
//   |y - ref| <= rel * (4 * sum_e w_e * sum_j |act_ej * down_ejc| + 2 * sum_e w_e * |d_ec| + |ref|)
// where d_ec is expert e's output. An expert no token chose holds NaN weights: reading them
// into any result would show.

#include "runtime/cuda/moe.h"

#include <cublas_v2.h>

#include <algorithm>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "bindery/ops.h"
#include "cuda_test_util.h"
#include "runtime/cpu/kernel_common.h"

namespace bindery::cuda::testing {
namespace {

struct CublasHandle {
  CublasHandle() {
    if (cublasCreate(&h) != CUBLAS_STATUS_SUCCESS) throw std::runtime_error("cublasCreate");
  }
  ~CublasHandle() { cublasDestroy(h); }
  cublasHandle_t h = nullptr;
};

uint16_t nan_of(DataType t) { return t == DataType::kBF16 ? 0x7FC0 : 0x7E00; }

// Router logits with ties: every fourth token all zero (a tie of every expert), every fourth
// small integers, every fourth two experts tied at the top, the rest random. The last expert's
// logit is always -60: no token chooses it.
std::vector<uint16_t> tied_logits(DataType t, int tokens, int experts, std::mt19937& rng) {
  std::vector<float> l(size_t(tokens) * experts);
  std::normal_distribution<float> normal(0.f, 2.f);
  for (int tok = 0; tok < tokens; ++tok) {
    float* row = &l[size_t(tok) * experts];
    for (int e = 0; e < experts; ++e) {
      switch (tok % 4) {
        case 0: row[e] = 0.f; break;
        case 1: row[e] = float(rng() % 3); break;
        case 2: row[e] = -1.f - float(rng() % 4); break;
        default: row[e] = normal(rng);
      }
    }
    if (tok % 4 == 2) row[rng() % (experts - 1)] = row[rng() % (experts - 1)] = 3.f;
    row[experts - 1] = -60.f;
  }
  std::vector<uint16_t> out(l.size());
  for (size_t i = 0; i < l.size(); ++i) out[i] = from_f32(t, l[i]);
  return out;
}

struct MoeData {
  DataType dtype;
  MoeShape shape;
  std::vector<uint16_t> x, logits, gate_up, down;
};

MoeData make_data(DataType t, int tokens, int hidden, int ffn, int experts, int top_k,
                  std::mt19937& rng) {
  MoeData d{t, {tokens, hidden, ffn, experts, top_k, true}, {}, {}, {}, {}};
  d.x = random_half(t, size_t(tokens) * hidden, rng);
  d.logits = tied_logits(t, tokens, experts, rng);
  d.gate_up = random_half(t, size_t(experts) * 2 * ffn * hidden, rng, -0.15f, 0.15f);
  d.down = random_half(t, size_t(experts) * hidden * ffn, rng, -0.15f, 0.15f);
  // The expert no token chooses: NaN weights.
  std::fill(d.gate_up.begin() + size_t(experts - 1) * 2 * ffn * hidden, d.gate_up.end(), nan_of(t));
  std::fill(d.down.begin() + size_t(experts - 1) * hidden * ffn, d.down.end(), nan_of(t));
  return d;
}

cpu::detail::MoeRoute cpu_route(DataType t, const std::vector<uint16_t>& logits, int tokens,
                                int experts, int top_k, bool normalize = true) {
  const std::vector<float> l = to_floats(t, logits);
  return cpu::detail::moe_route(MoeParams{experts, top_k, 1, UnaryOp::kSILU, normalize}, l.data(),
                                tokens);
}

struct Reference {
  std::vector<float> y, tol;
};

Reference reference(const MoeData& d) {
  const DataType t = d.dtype;
  const auto [tokens, h, f, experts, k, normalize] = d.shape;
  const float rel = t == DataType::kBF16 ? 1.0f / 256 : 1.0f / 2048;
  const auto route = cpu_route(t, d.logits, tokens, experts, k, normalize);
  const auto x = to_floats(t, d.x), gu = to_floats(t, d.gate_up), dn = to_floats(t, d.down);
  Reference r{std::vector<float>(size_t(tokens) * h, 0.f), std::vector<float>(size_t(tokens) * h)};
  std::vector<float> act(f), spread(h, 0.f);
  for (int tok = 0; tok < tokens; ++tok) {
    std::vector<std::pair<int64_t, float>> chosen;
    for (int i = 0; i < k; ++i)
      chosen.emplace_back(route.experts[size_t(tok) * k + i], route.weights[size_t(tok) * k + i]);
    std::sort(chosen.begin(), chosen.end());
    std::fill(spread.begin(), spread.end(), 0.f);
    float* y = &r.y[size_t(tok) * h];
    for (const auto& [e, w] : chosen) {
      const float* xr = &x[size_t(tok) * h];
      std::vector<float> g(2 * f);
      for (int j = 0; j < 2 * f; ++j) {
        double s = 0;
        for (int c = 0; c < h; ++c) s += double(xr[c]) * gu[(size_t(e) * 2 * f + j) * h + c];
        g[j] = round_to(t, float(s));
      }
      for (int j = 0; j < f; ++j)
        act[j] = round_to(t, round_to(t, float(g[j] / (1.0 + std::exp(-double(g[j]))))) * g[f + j]);
      for (int c = 0; c < h; ++c) {
        double s = 0, mag = 0;
        for (int j = 0; j < f; ++j) {
          const double p = double(act[j]) * dn[(size_t(e) * h + c) * f + j];
          s += p;
          mag += std::fabs(p);
        }
        const float out = round_to(t, float(s));
        y[c] = round_to(t, y[c] + round_to(t, out * w));
        spread[c] += w * float(4 * mag + 2 * std::fabs(out));
      }
    }
    for (int c = 0; c < h; ++c)
      r.tol[size_t(tok) * h + c] = rel * (spread[c] + std::fabs(y[c])) + 1e-6f;
  }
  return r;
}

// The layer on the GPU (x, logits and weights uploaded; y read back as floats).
std::vector<float> run_moe(const MoeData& d, MoePath path, cublasHandle_t cublas,
                           cudaStream_t stream = nullptr) {
  const MoeShape& s = d.shape;
  DeviceMem x(d.x), logits(d.logits), gate_up(d.gate_up), down(d.down),
      y(size_t(s.tokens) * s.hidden * 2 + 16);
  const size_t bytes = moe_workspace_bytes(d.dtype, s, path);
  DeviceMem ws(bytes);
  moe(d.dtype, s, x.get(), logits.get(), gate_up.get(), down.get(), y.get(), ws.get(), bytes, path,
      cublas, stream);
  return to_floats(d.dtype, y.read<uint16_t>(size_t(s.tokens) * s.hidden));
}

const char* path_name(MoePath p) {
  return p == MoePath::kGEMV ? "gemv" : p == MoePath::kGEMM ? "gemm" : "auto";
}

TEST(CudaMoe, MatchesHostReferenceOnBothPaths) {
  BINDERY_REQUIRE_CUDA_DEVICE();
  CublasHandle cublas;
  std::mt19937 rng(31);
  struct Shape {
    int hidden, ffn, experts, top_k;
  };
  // k of 264 and 96: a tail step past the last full 256 columns; E = 8, k = 2 is Mixtral's.
  for (DataType t : {DataType::kBF16, DataType::kHALF})
    for (const Shape sh : {Shape{128, 96, 8, 2}, Shape{264, 64, 6, 3}})
      for (int tokens : {1, 3, 40}) {
        const MoeData d = make_data(t, tokens, sh.hidden, sh.ffn, sh.experts, sh.top_k, rng);
        const Reference ref = reference(d);
        for (MoePath path : {MoePath::kGEMV, MoePath::kGEMM, MoePath::kAUTO}) {
          SCOPED_TRACE(std::string(name(t)) + " T=" + std::to_string(tokens) +
                       " H=" + std::to_string(sh.hidden) + " F=" + std::to_string(sh.ffn) +
                       " E=" + std::to_string(sh.experts) + " k=" + std::to_string(sh.top_k) +
                       " path " + path_name(path));
          const std::vector<float> y = run_moe(d, path, cublas.h);
          int bad = 0;
          for (size_t i = 0; i < y.size(); ++i)
            if (!(std::fabs(y[i] - ref.y[i]) <= ref.tol[i]) && ++bad <= 5)
              ADD_FAILURE() << "y[" << i / sh.hidden << "][" << i % sh.hidden << "] = " << y[i]
                            << ", expected " << ref.y[i] << " (tol " << ref.tol[i] << ")";
          EXPECT_EQ(bad, 0);
        }
      }
}

// On the device-only path a token's rows go through the same arithmetic whatever else is
// routed beside it: batched decoding equals one token at a time, bit for bit.
TEST(CudaMoe, GemvPathGivesATokenTheSameBitsAloneOrInABatch) {
  BINDERY_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(32);
  const int tokens = 20, h = 128;
  const MoeData batch = make_data(DataType::kBF16, tokens, h, 96, 8, 2, rng);
  const std::vector<float> together = run_moe(batch, MoePath::kGEMV, nullptr);
  for (int tok = 0; tok < tokens; ++tok) {
    MoeData one = batch;
    one.shape.tokens = 1;
    one.x.assign(batch.x.begin() + tok * h, batch.x.begin() + (tok + 1) * h);
    one.logits.assign(batch.logits.begin() + tok * 8, batch.logits.begin() + (tok + 1) * 8);
    const std::vector<float> alone = run_moe(one, MoePath::kGEMV, nullptr);
    EXPECT_TRUE(std::equal(alone.begin(), alone.end(), together.begin() + tok * h))
        << "token " << tok;
  }
}

// kGEMV queues kernels alone (the expert ids stay on the device), so a CUDA graph captures it
// and replays the same result; kGEMM, which waits for the routing, refuses a capturing stream.
TEST(CudaMoe, GemvPathRunsInACapturedGraphAndGemmRefusesCapture) {
  BINDERY_REQUIRE_CUDA_DEVICE();
  CublasHandle cublas;
  std::mt19937 rng(33);
  const MoeData d = make_data(DataType::kBF16, 4, 128, 96, 8, 2, rng);
  const MoeShape& s = d.shape;
  const std::vector<float> direct = run_moe(d, MoePath::kGEMV, nullptr);

  cudaStream_t stream = nullptr;
  CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  DeviceMem x(d.x), logits(d.logits), gate_up(d.gate_up), down(d.down),
      y(size_t(s.tokens) * s.hidden * 2);
  const size_t bytes = moe_workspace_bytes(d.dtype, s, MoePath::kGEMM);
  DeviceMem ws(bytes);
  const auto call = [&](MoePath path) {
    moe(d.dtype, s, x.get(), logits.get(), gate_up.get(), down.get(), y.get(), ws.get(), bytes,
        path, cublas.h, stream);
  };
  cudaGraph_t graph = nullptr;
  CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  call(MoePath::kGEMV);
  try {
    call(MoePath::kGEMM);
    ADD_FAILURE() << "kGEMM ran in a captured stream";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kINVALID_ARGUMENT);
    EXPECT_NE(std::string(e.what()).find("captured"), std::string::npos) << e.what();
  }
  CUDA_OK(cudaStreamEndCapture(stream, &graph));
  cudaGraphExec_t exec = nullptr;
  CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
  CUDA_OK(cudaGraphLaunch(exec, stream));
  CUDA_OK(cudaStreamSynchronize(stream));
  EXPECT_EQ(to_floats(d.dtype, y.read<uint16_t>(size_t(s.tokens) * s.hidden)), direct);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}

TEST(CudaMoe, RejectsBadArgumentsNamingThem) {
  BINDERY_REQUIRE_CUDA_DEVICE();
  DeviceMem buf(1 << 16);
  const MoeShape ok{2, 64, 32, 4, 2, true};
  const auto call = [&](const MoeShape& s, size_t ws_bytes) {
    moe(DataType::kBF16, s, buf.get(), buf.get(), buf.get(), buf.get(), buf.get(), buf.get(),
        ws_bytes, MoePath::kGEMV, nullptr, nullptr);
  };
  const auto expect = [](const std::function<void()>& f, const char* words) {
    try {
      f();
      ADD_FAILURE() << "accepted; expected an error naming " << words;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kINVALID_ARGUMENT);
      EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
    }
  };
  expect([&] { call(ok, 16); }, "moe_workspace_bytes");
  expect([&] { call({2, 64, 32, 4, 5, true}, 1 << 16); }, "top_k 5");
  expect([&] { call({2, 60, 32, 4, 2, true}, 1 << 16); }, "hidden 60");
  expect([&] { call({2, 64, 32, kMoeMaxExperts + 1, 2, true}, 1 << 16); }, "experts 257");
  EXPECT_THROW(moe_workspace_bytes(DataType::kFLOAT, ok, MoePath::kGEMV), Error);
  // No tokens: nothing to do, nothing read.
  call({0, 64, 32, 4, 2, true}, 0);
}

// transformers' router on logits with ties (tools/make_llama_fixtures.py, router_cases()).
TEST(CudaMoeRoute, MatchesTransformersRouterIncludingTies) {
  BINDERY_REQUIRE_CUDA_DEVICE();
  std::ifstream in(std::string(BINDERY_SOURCE_DIR) + "/tests/fixtures/llama/router_cases.json");
  ASSERT_TRUE(in) << "router_cases.json";
  int cases = 0;
  for (const nlohmann::json& c : nlohmann::json::parse(in)) {
    const int e = c.at("experts"), k = c.at("top_k");
    SCOPED_TRACE("experts " + std::to_string(e) + ", top_k " + std::to_string(k));
    const auto rows = c.at("logits").get<std::vector<std::vector<float>>>();
    std::vector<float> logits;
    for (const auto& r : rows) logits.insert(logits.end(), r.begin(), r.end());
    const int tokens = int(rows.size());
    DeviceMem dl(logits), de(size_t(tokens) * k * 4), dw(size_t(tokens) * k * 4);
    moe_route(DataType::kFLOAT, dl.get(), tokens, e, k, true, de.as<int32_t>(), dw.as<float>(),
              nullptr);
    const auto experts = de.read<int32_t>(size_t(tokens) * k);
    const auto weights = dw.read<float>(size_t(tokens) * k);
    const auto indices = c.at("indices").get<std::vector<std::vector<int>>>();
    const auto want = c.at("weights").get<std::vector<std::vector<double>>>();
    for (int t = 0; t < tokens; ++t)
      for (int i = 0; i < k; ++i) {
        EXPECT_EQ(experts[size_t(t) * k + i], indices[t][i]) << "token " << t << " choice " << i;
        EXPECT_NEAR(weights[size_t(t) * k + i], want[t][i], 1e-6) << "token " << t;
      }
    ++cases;
  }
  EXPECT_EQ(cases, 9);
}

// The CPU kernel's routing on bf16 logits full of ties, over every selection path: a partial
// sort (k * 64 <= E), nth_element with a sort of the k - 1 before (insertion sort below 17,
// introsort above), k = E; with and without renormalising.
TEST(CudaMoeRoute, MatchesTheCpuKernelOnTiedLogits) {
  BINDERY_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(34);
  const int tokens = 97;
  for (auto [experts, top_k] :
       {std::pair{8, 2}, {8, 3}, {5, 5}, {16, 4}, {64, 1}, {64, 20}, {128, 2}, {256, 8}, {256, 40}})
    for (bool normalize : {true, false}) {
      SCOPED_TRACE("experts " + std::to_string(experts) + ", top_k " + std::to_string(top_k) +
                   (normalize ? "" : ", not renormalised"));
      const auto logits = tied_logits(DataType::kBF16, tokens, experts, rng);
      const auto ref = cpu_route(DataType::kBF16, logits, tokens, experts, top_k, normalize);
      DeviceMem dl(logits), de(size_t(tokens) * top_k * 4), dw(size_t(tokens) * top_k * 4);
      moe_route(DataType::kBF16, dl.get(), tokens, experts, top_k, normalize, de.as<int32_t>(),
                dw.as<float>(), nullptr);
      const auto got = de.read<int32_t>(size_t(tokens) * top_k);
      const auto w = dw.read<float>(size_t(tokens) * top_k);
      int bad = 0;
      for (size_t i = 0; i < got.size(); ++i) {
        const float want = ref.weights[i];
        if ((got[i] != ref.experts[i] || !(std::fabs(w[i] - want) <= 4e-7f * want + 1e-30f)) &&
            ++bad <= 5)
          ADD_FAILURE() << "token " << i / top_k << " choice " << i % top_k << ": expert " << got[i]
                        << " weight " << w[i] << ", expected " << ref.experts[i] << " weight "
                        << want;
      }
      EXPECT_EQ(bad, 0);
    }
}

}  // namespace
}  // namespace bindery::cuda::testing

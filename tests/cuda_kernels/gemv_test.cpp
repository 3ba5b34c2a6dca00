// gemv against a CPU reference (double accumulation of the same bf16/f16 products).
// Tolerance: |y - ref| <= 1e-4 * sum_k |x w| (fp32 accumulation order on the tensor cores),
// plus one rounding step of the output type when y is bf16/f16.

#include "bindery/error.h"
#include "cuda_test_util.h"

namespace bindery::cuda::testing {
namespace {

struct GemvCase {
  DataType dtype;
  int m, n, k;
  bool bias;
  bool f32_out;
  int k_warps;  // 0: heuristic
};

std::string describe(const GemvCase& c) {
  return std::string(name(c.dtype)) + " m=" + std::to_string(c.m) + " n=" + std::to_string(c.n) +
         " k=" + std::to_string(c.k) + (c.bias ? " +bias" : "") + (c.f32_out ? " f32-out" : "") +
         " k_warps=" + std::to_string(c.k_warps);
}

void run_case(const GemvCase& c, std::mt19937& rng) {
  SCOPED_TRACE(describe(c));
  const auto x = random_half(c.dtype, size_t(c.m) * c.k, rng);
  const auto w = random_half(c.dtype, size_t(c.n) * c.k, rng, -0.5f, 0.5f);
  const auto b = random_half(c.dtype, size_t(c.n), rng);
  DeviceMem dx(x), dw(w), db(b);
  const size_t ybytes = size_t(c.m) * c.n * (c.f32_out ? 4 : 2);
  DeviceMem dy(ybytes);
  gemv(c.dtype, dx.get(), dw.get(), c.bias ? db.get() : nullptr,
       c.f32_out ? DataType::kFLOAT : c.dtype, dy.get(), c.m, c.n, c.k, nullptr, c.k_warps);
  std::vector<float> y;
  if (c.f32_out) {
    y = dy.read<float>(size_t(c.m) * c.n);
  } else {
    y = to_floats(c.dtype, dy.read<uint16_t>(size_t(c.m) * c.n));
  }
  const auto xf = to_floats(c.dtype, x), wf = to_floats(c.dtype, w), bf = to_floats(c.dtype, b);
  int bad = 0;
  for (int i = 0; i < c.m; ++i)
    for (int j = 0; j < c.n; ++j) {
      double acc = 0, mag = 0;
      for (int kk = 0; kk < c.k; ++kk) {
        const double p = double(xf[size_t(i) * c.k + kk]) * wf[size_t(j) * c.k + kk];
        acc += p;
        mag += std::fabs(p);
      }
      if (c.bias) acc += bf[j], mag += std::fabs(bf[j]);
      double tol = 1e-4 * mag + 1e-6;
      if (!c.f32_out) tol += one_step(c.dtype, float(acc));
      const float got = y[size_t(i) * c.n + j];
      if (!(std::fabs(got - acc) <= tol) && ++bad <= 5)
        ADD_FAILURE() << "y[" << i << "][" << j << "] = " << got << ", expected " << acc << " (tol "
                      << tol << ")";
    }
  EXPECT_EQ(bad, 0);
}

TEST(CudaGemv, MatchesCpuReferenceOverShapesAndDtypes) {
  BINDERY_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(7);
  const GemvCase cases[] = {
      {DataType::kBF16, 1, 4096, 4096, false, false, 0},   // Llama q/o projection
      {DataType::kBF16, 8, 1024, 4096, false, true, 0},    // k/v projection, 8 tokens
      {DataType::kBF16, 1, 6144, 4096, true, false, 0},    // fused qkv with bias (Qwen2)
      {DataType::kBF16, 2, 1000, 14336, false, false, 0},  // down projection shape, odd n
      {DataType::kHALF, 1, 4096, 4096, false, false, 0},
      {DataType::kHALF, 8, 777, 1032, true, true, 0},    // k % 256 != 0: the tail step
      {DataType::kBF16, 3, 13, 264, true, false, 0},     // n not a multiple of 8
      {DataType::kBF16, 1, 1, 8, false, true, 0},        // smallest
      {DataType::kBF16, 5, 32007, 512, false, true, 0},  // many rows, lm_head-like output
      {DataType::kHALF, 7, 100, 40, false, false, 0},    // k shorter than one step
  };
  for (const auto& c : cases) run_case(c, rng);
}

TEST(CudaGemv, EveryKSplitGivesTheSameAnswer) {
  BINDERY_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(8);
  for (int kw : {1, 2, 4, 8, 16})
    for (int m : {1, 8}) run_case({DataType::kBF16, m, 520, 2312, true, true, kw}, rng);
}

TEST(CudaGemv, RejectsBadShapesNamingThem) {
  BINDERY_REQUIRE_CUDA_DEVICE();
  DeviceMem buf(1 << 16);
  const auto call = [&](int m, int n, int k, DataType t = DataType::kBF16, int kw = 0) {
    gemv(t, buf.get(), buf.get(), nullptr, DataType::kFLOAT, buf.get(), m, n, k, nullptr, kw);
  };
  EXPECT_THROW(call(9, 8, 64), Error);  // m > 8
  EXPECT_THROW(call(1, 8, 12), Error);  // k % 8 != 0
  EXPECT_THROW(call(1, 8, 64, DataType::kFLOAT), Error);
  EXPECT_THROW(call(1, 8, 64, DataType::kBF16, 3), Error);
  try {
    call(0, 8, 64);
    FAIL() << "m = 0 accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kINVALID_ARGUMENT);
    EXPECT_NE(std::string(e.what()).find("m (tokens)"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace bindery::cuda::testing

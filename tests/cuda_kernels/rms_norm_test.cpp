// rms_norm against LlamaRMSNorm's arithmetic on the CPU: fp32 sum of squares, normalize,
// round to the element type, multiply by the weight, round. With the residual: h = round(x +
// residual) must be written back bit-exactly (one fp32 add, one rounding). Outputs may differ
// by two rounding steps (rsqrtf vs 1/sqrt and summation order move the normalized value by
// one step, the weight product rounds once more).

#include "cuda_test_util.h"

namespace bindery::cuda::testing {
namespace {

void run_case(DataType t, int rows, int hidden, bool with_residual, std::mt19937& rng) {
  SCOPED_TRACE(std::string(name(t)) + " rows=" + std::to_string(rows) +
               " hidden=" + std::to_string(hidden) + (with_residual ? " +residual" : ""));
  const float eps = 1e-5f;
  const auto x = random_half(t, size_t(rows) * hidden, rng, -2.f, 2.f);
  const auto r = random_half(t, size_t(rows) * hidden, rng, -2.f, 2.f);
  const auto w = random_half(t, size_t(hidden), rng, 0.5f, 1.5f);
  DeviceMem dx(x), dr(r), dw(w), dout(x.size() * 2);
  rms_norm(t, dx.get(), with_residual ? dr.get() : nullptr, dw.get(), dout.get(), rows, hidden, eps,
           nullptr);
  const auto out = to_floats(t, dout.read<uint16_t>(x.size()));
  const auto res = dr.read<uint16_t>(r.size());
  int bad = 0;
  for (int i = 0; i < rows; ++i) {
    std::vector<float> h(hidden);
    double ss = 0;
    for (int j = 0; j < hidden; ++j) {
      const size_t idx = size_t(i) * hidden + j;
      h[j] = to_f32(t, x[idx]);
      if (with_residual) {
        const uint16_t sum = from_f32(t, to_f32(t, x[idx]) + to_f32(t, r[idx]));
        if (res[idx] != sum && ++bad <= 5) {
          ADD_FAILURE() << "residual[" << i << "][" << j << "] not x + residual";
        }
        h[j] = to_f32(t, sum);
      }
      ss += double(h[j]) * h[j];
    }
    const float inv = float(1.0 / std::sqrt(ss / hidden + eps));
    for (int j = 0; j < hidden; ++j) {
      const float ref = round_to(t, to_f32(t, w[j]) * round_to(t, h[j] * inv));
      const float got = out[size_t(i) * hidden + j];
      if (!(std::fabs(got - ref) <= 2 * one_step(t, ref)) && ++bad <= 5) {
        ADD_FAILURE() << "out[" << i << "][" << j << "] = " << got << ", expected " << ref;
      }
    }
  }
  EXPECT_EQ(bad, 0);
  if (!with_residual) {
    EXPECT_EQ(res, r) << "residual touched although null was passed";
  }
}

TEST(CudaRmsNorm, MatchesLlamaRmsNormWithAndWithoutResidual) {
  BINDERY_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(11);
  for (DataType t : {DataType::kBF16, DataType::kHALF})
    for (bool res : {false, true}) {
      run_case(t, 1, 4096, res, rng);   // decode
      run_case(t, 37, 4096, res, rng);  // prefill rows
      run_case(t, 3, 8, res, rng);      // one chunk
      run_case(t, 2, 8200, res, rng);   // more chunks than threads
      run_case(t, 5, 896, res, rng);    // Qwen2-0.5B hidden
    }
}

}  // namespace
}  // namespace bindery::cuda::testing

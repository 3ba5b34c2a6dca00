// rotary_embedding against transformers' arithmetic on the CPU: angle = float(pos) *
// inv_freq in fp32, cos/sin (double, then fp32) times the attention scaling rounded to the
// element type, then q*cos and rotate_half(q)*sin each rounded and their sum rounded. GPU
// sincosf may differ in the last fp32 bit, which can move either product by one rounding
// step (at the inputs' magnitude, 3) and the sum by one more.

#include "cuda_test_util.h"

namespace bindery::cuda::testing {
namespace {

void run_case(DataType t, int tokens, int hq, int hkv, int d, bool with_k, float scaling,
              std::mt19937& rng) {
  SCOPED_TRACE(std::string(name(t)) + " tokens=" + std::to_string(tokens) + " hq=" +
               std::to_string(hq) + " hkv=" + std::to_string(hkv) + " d=" + std::to_string(d));
  const auto q = random_half(t, size_t(tokens) * hq * d, rng, -3.f, 3.f);
  const auto k = random_half(t, size_t(tokens) * hkv * d, rng, -3.f, 3.f);
  std::vector<int32_t> pos(tokens);
  std::uniform_int_distribution<int> pd(0, 131071);
  for (int i = 0; i < tokens; ++i) pos[i] = i < 4 ? i : pd(rng);  // small and long-context
  std::vector<float> inv_freq(d / 2);
  for (int i = 0; i < d / 2; ++i) inv_freq[i] = float(1.0 / std::pow(500000.0, double(2 * i) / d));
  DeviceMem dq(q), dk(k), dpos(pos), dinv(inv_freq);
  rotary_embedding(t, dq.get(), with_k ? dk.get() : nullptr, dpos.as<int32_t>(), dinv.as<float>(),
                   scaling, tokens, hq, hkv, d, nullptr);
  const auto gq = to_floats(t, dq.read<uint16_t>(q.size()));
  const auto gk = to_floats(t, dk.read<uint16_t>(k.size()));
  int bad = 0;
  const auto check = [&](const std::vector<uint16_t>& in, const std::vector<float>& got, int heads,
                         const char* what) {
    for (int tok = 0; tok < tokens; ++tok)
      for (int h = 0; h < heads; ++h) {
        const size_t base = (size_t(tok) * heads + h) * d;
        for (int i = 0; i < d; ++i) {
          const int f = i % (d / 2);
          const float angle = float(pos[tok]) * inv_freq[f];
          const float c = round_to(t, float(std::cos(double(angle))) * scaling);
          const float s = round_to(t, float(std::sin(double(angle))) * scaling);
          const float xi = to_f32(t, in[base + i]);
          const float rot =
              i < d / 2 ? -to_f32(t, in[base + i + d / 2]) : to_f32(t, in[base + i - d / 2]);
          const float ref = round_to(t, round_to(t, xi * c) + round_to(t, rot * s));
          if (!(std::fabs(got[base + i] - ref) <= 2 * one_step(t, 3.f) + one_step(t, ref)) &&
              ++bad <= 5)
            ADD_FAILURE() << what << "[" << tok << "][" << h << "][" << i << "] = " << got[base + i]
                          << ", expected " << ref;
        }
      }
  };
  check(q, gq, hq, "q");
  if (with_k)
    check(k, gk, hkv, "k");
  else
    EXPECT_EQ(gk, to_floats(t, k)) << "k touched although null was passed";
  EXPECT_EQ(bad, 0);
}

TEST(CudaRotary, MatchesTransformersRotateHalf) {
  BINDERY_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(13);
  run_case(DataType::kBF16, 1, 32, 8, 128, true, 1.0f, rng);  // Llama-3-8B decode
  run_case(DataType::kBF16, 19, 32, 8, 128, true, 1.0f, rng);
  run_case(DataType::kHALF, 9, 14, 2, 64, true, 1.0f, rng);  // Qwen2-0.5B
  run_case(DataType::kBF16, 5, 4, 4, 16, false, 1.2f, rng);  // q only, scaled (YaRN-style)
}

}  // namespace
}  // namespace bindery::cuda::testing

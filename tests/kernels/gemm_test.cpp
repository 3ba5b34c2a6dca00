// gemm (OpenBLAS) against gemm_reference (naive, double accumulation) over many shapes,
// transposes, leading dims, alpha and beta.

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "bindery/error.h"
#include "runtime/cpu/kernels.h"

namespace bindery::cpu {
namespace {

std::vector<float> random_vec(size_t n, std::mt19937& rng) {
  std::uniform_real_distribution<float> d(-1.f, 1.f);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

TEST(Gemm, MatchesReferenceOverShapesTransposesAndLeadingDims) {
  std::mt19937 rng(7);
  const std::vector<int64_t> sizes = {1, 2, 3, 7, 16, 33, 64, 130};
  int checked = 0;
  for (int64_t m : sizes)
    for (int64_t n : sizes)
      for (int64_t k : {1, 5, 17, 64, 129})
        for (int t = 0; t < 4; ++t) {
          const bool ta = t & 1, tb = t & 2;
          const int64_t pad = (m + n + k) % 3;  // leading dims larger than the rows
          const int64_t lda = (ta ? m : k) + pad, ldb = (tb ? k : n) + pad, ldc = n + pad;
          const auto a = random_vec(static_cast<size_t>((ta ? k : m) * lda), rng);
          const auto b = random_vec(static_cast<size_t>((tb ? n : k) * ldb), rng);
          const auto c0 = random_vec(static_cast<size_t>(m * ldc), rng);
          const float alpha = (checked % 3 == 0) ? 1.0f : 0.75f;
          const float beta = (checked % 2 == 0) ? 0.0f : 0.5f;
          auto c = c0, r = c0;
          gemm(ta, tb, m, n, k, alpha, a.data(), lda, b.data(), ldb, beta, c.data(), ldc);
          gemm_reference(ta, tb, m, n, k, alpha, a.data(), lda, b.data(), ldb, beta, r.data(), ldc);
          for (int64_t i = 0; i < m; ++i)
            for (int64_t j = 0; j < n; ++j) {
              // 1e-4 relative to the magnitude of the sum (sum of |a||b| terms, plus beta*c).
              double scale = std::fabs(beta * c0[i * ldc + j]);
              for (int64_t p = 0; p < k; ++p)
                scale += std::fabs(alpha * (ta ? a[p * lda + i] : a[i * lda + p]) *
                                   (tb ? b[j * ldb + p] : b[p * ldb + j]));
              ASSERT_NEAR(c[i * ldc + j], r[i * ldc + j], 1e-4 * std::max(scale, 1e-6))
                  << "m=" << m << " n=" << n << " k=" << k << " ta=" << ta << " tb=" << tb
                  << " at (" << i << ", " << j << ")";
            }
          // Padding columns of C are untouched.
          for (int64_t i = 0; i < m; ++i)
            for (int64_t j = n; j < ldc; ++j) ASSERT_EQ(c[i * ldc + j], c0[i * ldc + j]);
          ++checked;
        }
  EXPECT_EQ(checked, 8 * 8 * 5 * 4);
}

TEST(Gemm, BetaZeroIgnoresNanInCAndEmptyKScalesC) {
  const std::vector<float> a = {1, 2, 3, 4}, b = {1, 0, 0, 1};
  std::vector<float> c(4, std::numeric_limits<float>::quiet_NaN());
  gemm(false, false, 2, 2, 2, 1.0f, a.data(), 2, b.data(), 2, 0.0f, c.data(), 2);
  EXPECT_EQ(c, a);
  std::vector<float> d = {1, 2, 3, 4};
  gemm(false, false, 2, 2, 0, 1.0f, a.data(), 2, b.data(), 2, 2.0f, d.data(), 2);
  EXPECT_EQ(d, (std::vector<float>{2, 4, 6, 8}));
  gemm(false, false, 2, 2, 0, 1.0f, a.data(), 2, b.data(), 2, 0.0f, d.data(), 2);
  EXPECT_EQ(d, (std::vector<float>{0, 0, 0, 0}));
}

TEST(Gemm, RejectsLeadingDimsSmallerThanRows) {
  std::vector<float> a(6), b(6), c(4);
  try {
    gemm(false, false, 2, 2, 3, 1.0f, a.data(), 2, b.data(), 2, 0.0f, c.data(), 2);
    FAIL() << "expected kINVALID_ARGUMENT";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kINVALID_ARGUMENT);
    EXPECT_NE(std::string(e.what()).find("lda=2 (need >= 3)"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace bindery::cpu

// GEMM: C = alpha * op(A) * op(B) + beta * C, row-major f32.
//
// gemm() hands the work to OpenBLAS's sgemm, whose packed, register-blocked micro-kernels run
// near the machine's FLOP peak; OpenBLAS splits M and N (never K) across its threads, so each
// C element is summed in the same order on every run: the result is deterministic.
// gemm_reference() is the plain triple loop, summing in double, that gemm() is tested against.

#include <cblas.h>

#include <climits>
#include <string>

#include "bindery/error.h"
#include "runtime/cpu/kernels.h"

namespace bindery::cpu {

namespace {
void check_args(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, int64_t lda,
                int64_t ldb, int64_t ldc) {
  check(m >= 0 && n >= 0 && k >= 0, ErrorCode::kINVALID_ARGUMENT,
        "gemm sizes must be >= 0, got m=" + std::to_string(m) + " n=" + std::to_string(n) +
            " k=" + std::to_string(k));
  const int64_t a_cols = trans_a ? m : k;
  const int64_t b_cols = trans_b ? k : n;
  check(lda >= a_cols && ldb >= b_cols && ldc >= n, ErrorCode::kINVALID_ARGUMENT,
        "gemm leading dims too small: lda=" + std::to_string(lda) + " (need >= " +
            std::to_string(a_cols) + "), ldb=" + std::to_string(ldb) + " (need >= " +
            std::to_string(b_cols) + "), ldc=" + std::to_string(ldc) + " (need >= " +
            std::to_string(n) + ")");
}

/// C = beta * C, with beta == 0 writing zeros (BLAS semantics: C is not read).
void scale_c(int64_t m, int64_t n, float beta, float* c, int64_t ldc) {
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) c[i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[i * ldc + j];
}
}  // namespace

void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
          const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
          int64_t ldc) {
  check_args(trans_a, trans_b, m, n, k, lda, ldb, ldc);
  if (m == 0 || n == 0) return;
  if (k == 0) return scale_c(m, n, beta, c, ldc);
  for (int64_t v : {m, n, k, lda, ldb, ldc})
    check(v <= INT_MAX, ErrorCode::kUNSUPPORTED,
          "gemm dimension " + std::to_string(v) + " exceeds the 32-bit BLAS interface");
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, static_cast<blasint>(m),
              static_cast<blasint>(n), static_cast<blasint>(k), alpha, a,
              static_cast<blasint>(lda), b, static_cast<blasint>(ldb), beta, c,
              static_cast<blasint>(ldc));
}

void gemm_reference(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                    const float* a, int64_t lda, const float* b, int64_t ldb, float beta,
                    float* c, int64_t ldc) {
  check_args(trans_a, trans_b, m, n, k, lda, ldb, ldc);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double sum = 0.0;
      for (int64_t p = 0; p < k; ++p) {
        const float av = trans_a ? a[p * lda + i] : a[i * lda + p];
        const float bv = trans_b ? b[j * ldb + p] : b[p * ldb + j];
        sum += static_cast<double>(av) * static_cast<double>(bv);
      }
      float& out = c[i * ldc + j];
      const float r = static_cast<float>(static_cast<double>(alpha) * sum);
      out = beta == 0.0f ? r : r + beta * out;
    }
  }
}

}  // namespace bindery::cpu

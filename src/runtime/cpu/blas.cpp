#include "runtime/cpu/blas.h"

#ifndef BINDERY_NO_OPENBLAS
#include <cblas.h>

#include <mutex>
#endif

namespace bindery::cpu::blas {

#ifndef BINDERY_NO_OPENBLAS

namespace {
// OpenBLAS's own thread pool is switched off (process-wide): gemm() spreads single-threaded
// calls over bindery's OpenMP pool (see gemm.cpp for why one pool, not two).
void single_threaded() {
  static std::once_flag once;
  std::call_once(once, [] { openblas_set_num_threads(1); });
}
}  // namespace

void sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
           int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  single_threaded();
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, static_cast<blasint>(m), static_cast<blasint>(n),
              static_cast<blasint>(k), alpha, a, static_cast<blasint>(lda), b,
              static_cast<blasint>(ldb), beta, c, static_cast<blasint>(ldc));
}

void sgemv(bool trans, int64_t rows, int64_t cols, float alpha, const float* a, int64_t lda,
           const float* x, float beta, float* y) {
  single_threaded();
  cblas_sgemv(CblasRowMajor, trans ? CblasTrans : CblasNoTrans, static_cast<blasint>(rows),
              static_cast<blasint>(cols), alpha, a, static_cast<blasint>(lda), x, 1, beta, y, 1);
}

#else  // portable loops: correct and deterministic, not fast

void sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
           int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      float sum = 0;
      for (int64_t p = 0; p < k; ++p)
        sum += (trans_a ? a[p * lda + i] : a[i * lda + p]) *
               (trans_b ? b[j * ldb + p] : b[p * ldb + j]);
      float& out = c[i * ldc + j];
      out = beta == 0.0f ? alpha * sum : alpha * sum + beta * out;
    }
}

void sgemv(bool trans, int64_t rows, int64_t cols, float alpha, const float* a, int64_t lda,
           const float* x, float beta, float* y) {
  const int64_t outs = trans ? cols : rows, len = trans ? rows : cols;
  for (int64_t j = 0; j < outs; ++j) {
    float sum = 0;
    for (int64_t p = 0; p < len; ++p) sum += (trans ? a[p * lda + j] : a[j * lda + p]) * x[p];
    y[j] = beta == 0.0f ? alpha * sum : alpha * sum + beta * y[j];
  }
}

#endif

}  // namespace bindery::cpu::blas

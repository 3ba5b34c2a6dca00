#pragma once
// The two BLAS routines gemm() calls, row-major f32, single-threaded per call (the caller
// spreads calls over its own OpenMP pool). OpenBLAS by default; portable loops when bindery is
// configured with -DBINDERY_WITH_OPENBLAS=OFF (a machine without OpenBLAS, e.g. the GPU machine,
// where the CPU path only has to be right, not fast).

#include <cstdint>

namespace bindery::cpu::blas {

/// C = alpha * op(A) * op(B) + beta * C.
void sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
           int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc);
/// y = alpha * op(A) * x + beta * y, A [rows, cols] row-major; op(A) = Aᵀ when `trans`.
void sgemv(bool trans, int64_t rows, int64_t cols, float alpha, const float* a, int64_t lda,
           const float* x, float beta, float* y);

}  // namespace bindery::cpu::blas

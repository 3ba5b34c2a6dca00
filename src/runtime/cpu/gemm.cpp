// GEMM: C = alpha * op(A) * op(B) + beta * C, row-major f32.
//
// gemm() hands the work to OpenBLAS's sgemm, whose packed, register-blocked micro-kernels run
// near the machine's FLOP peak. OpenBLAS's own thread pool is switched off: C is cut into
// tiles by shape alone and the tiles are spread over our OpenMP pool, one single-threaded
// sgemm call each. One pool instead of two matters: alternating between OpenBLAS's spinning
// pthreads and OpenMP's spinning workers (gemm, then an activation, then gemm) made a small
// MLP 4-5x slower on two cores. And since K is never split and the tiling ignores the thread
// count, each C element is summed in the same order on every run: results are deterministic.
// Caveat: openblas_set_num_threads(1) is process-wide.
// gemm_reference() is the plain triple loop, summing in double, that gemm() is tested against.

#include <algorithm>
#include <climits>
#include <string>

#include "bindery/error.h"
#include "core/parallel.h"
#include "runtime/cpu/blas.h"
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
        "gemm leading dims too small: lda=" + std::to_string(lda) +
            " (need >= " + std::to_string(a_cols) + "), ldb=" + std::to_string(ldb) +
            " (need >= " + std::to_string(b_cols) + "), ldc=" + std::to_string(ldc) +
            " (need >= " + std::to_string(n) + ")");
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

/// How C is cut into tiles, one single-threaded sgemm call each. The cut depends on the shape
/// only (never on the thread count), so every run and every machine configuration sums each
/// C element in the same order. Aim for >= 16 tiles (enough for 16 cores) of at least 64 rows
/// and 128 columns; tiles of at most 1024 rows keep B from being repacked too often.
struct Tiles {
  int64_t tile_m, tile_n, m_tiles, n_tiles;
};
Tiles tiles_for(int64_t m, int64_t n, int64_t k) {
  constexpr int64_t kTargetTiles = 16;
  if (m * n * k < (int64_t{1} << 21)) return {m, n, 1, 1};  // < ~4 MFLOP: one call
  const int64_t n_tiles =
      std::min(ceil_div(n, 128), std::max<int64_t>(1, ceil_div(kTargetTiles, ceil_div(m, 1024))));
  const int64_t m_tiles =
      std::max(ceil_div(m, 1024), std::min(ceil_div(m, 64), ceil_div(kTargetTiles, n_tiles)));
  const int64_t tile_m = ceil_div(m, m_tiles), tile_n = ceil_div(n, n_tiles);
  return {tile_m, tile_n, ceil_div(m, tile_m), ceil_div(n, tile_n)};
}

// A few rows of A (decoding one token per sequence): memory-bound, since every weight is
// read for a handful of multiply-adds. Each row is a matrix-vector product over column blocks
// of B spread across the cores, one sgemv call each. Blocks are cut by shape only, and each
// C element is one block's sum, so results stay deterministic; and a row gives the same bits
// whether it comes alone or with others (batched decoding equals one-by-one decoding).
constexpr int64_t kGEMV_ROWS = 8;
constexpr int64_t kGEMV_MIN_WORK = 1 << 16;  // n * k below this: one sgemm call is cheaper
constexpr int64_t kGEMV_BLOCK_BYTES = 128 << 10;

void gemv_rows(bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
               int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  // Blocks start at multiples of 16 columns, so a column lands in the same place of sgemv's
  // unrolled groups however wide the caller's C is (matmul widens f16/bf16 b in panels). Each
  // holds at least kGEMV_BLOCK_BYTES of B, so the per-call cost of sgemv stays small, and there
  // are up to about 256 of them to keep many cores evenly busy. All rows of A go through a block
  // while it is in cache.
  const int64_t min_cols = ceil_div(kGEMV_BLOCK_BYTES, k * static_cast<int64_t>(sizeof(float)));
  const int64_t block = ceil_div(std::max({int64_t{16}, min_cols, ceil_div(n, 256)}), 16) * 16;
  const int64_t blocks = ceil_div(n, block);
  parallel_for(blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t j0 = t * block, nj = std::min(block, n - j0);
      for (int64_t i = 0; i < m; ++i) {
        if (trans_b)  // B is [n, k]: rows j0.. of B times a's row
          blas::sgemv(false, nj, k, alpha, b + j0 * ldb, ldb, a + i * lda, beta, c + i * ldc + j0);
        else  // B is [k, n]: a's row times columns j0.. of B
          blas::sgemv(true, k, nj, alpha, b + j0, ldb, a + i * lda, beta, c + i * ldc + j0);
      }
    }
  });
}

/// C = beta * C, with beta == 0 writing zeros (BLAS semantics: C is not read).
void scale_c(int64_t m, int64_t n, float beta, float* c, int64_t ldc) {
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) c[i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[i * ldc + j];
}
}  // namespace

void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
          int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  check_args(trans_a, trans_b, m, n, k, lda, ldb, ldc);
  if (m == 0 || n == 0) return;
  if (k == 0) return scale_c(m, n, beta, c, ldc);
  for (int64_t v : {m, n, k, lda, ldb, ldc})
    check(v <= INT_MAX, ErrorCode::kUNSUPPORTED,
          "gemm dimension " + std::to_string(v) + " exceeds the 32-bit BLAS interface");
  const auto call = [&](int64_t i0, int64_t mi, int64_t j0, int64_t nj) {
    const float* ap = trans_a ? a + i0 : a + i0 * lda;
    const float* bp = trans_b ? b + j0 * ldb : b + j0;
    blas::sgemm(trans_a, trans_b, mi, nj, k, alpha, ap, lda, bp, ldb, beta, c + i0 * ldc + j0, ldc);
  };
  if (m <= kGEMV_ROWS && !trans_a && n * k >= kGEMV_MIN_WORK)
    return gemv_rows(trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  const Tiles t = tiles_for(m, n, k);
  if (t.m_tiles * t.n_tiles == 1) return call(0, m, 0, n);
  parallel_for(t.m_tiles * t.n_tiles, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t i0 = (i / t.n_tiles) * t.tile_m, j0 = (i % t.n_tiles) * t.tile_n;
      call(i0, std::min(t.tile_m, m - i0), j0, std::min(t.tile_n, n - j0));
    }
  });
}

void gemm_reference(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                    const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
                    int64_t ldc) {
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

// Batched matmul with numpy-broadcast batch dims and optional transposes of either operand.
//
// Operands are f32 or widened to f32, and every batch is a gemm() call. When b is one matrix
// shared by every batch (a linear layer's weight) and a is not transposed, the batch folds
// into M and the whole layer is one large gemm, which is where OpenBLAS is fastest.
//
// A shared f16/bf16 b (a reduced-precision weight) is not widened whole: it is widened one
// panel of output columns at a time into a cache-sized f32 buffer per thread, and each panel
// is one gemm writing its columns of C. That reads the weight once, in its small dtype, and never
// allocates an f32 copy of it (an lm_head would need gigabytes). Panel widths depend only on
// the shapes, so results stay deterministic.

#include <algorithm>

#include "core/half.h"
#include "core/parallel.h"
#include "runtime/cpu/kernel_common.h"

namespace bindery::cpu::detail {

namespace {
/// f32 elements per widened weight panel (4 MiB).
constexpr int64_t kPanelElements = int64_t{1} << 20;
}  // namespace

void run_matmul(const GraphNode& node, Inputs in, const TensorRef& out) {
  const auto& p = std::get<MatMulParams>(node.params);
  const Dims& ad = in[0].dims;
  const Dims& bd = in[1].dims;
  const size_t ra = ad.size(), rb = bd.size(), ro = out.dims.size();
  const int64_t m = out.dims[ro - 2], n = out.dims[ro - 1];
  const int64_t k = p.transpose_a ? ad[ra - 2] : ad[ra - 1];
  const int64_t lda = ad[ra - 1], ldb = bd[rb - 1];
  const int64_t a_mat = ad[ra - 2] * ad[ra - 1], b_mat = bd[rb - 2] * bd[rb - 1];

  const Dims batch(out.dims.begin(), out.dims.end() - 2);
  const int64_t batches = volume(batch);
  const int64_t a_batches = volume(Dims(ad.begin(), ad.end() - 2));
  const int64_t b_batches = volume(Dims(bd.begin(), bd.end() - 2));
  if (batches == 0 || m == 0 || n == 0) return;

  Scratch scratch_a;
  const float* a = as_f32(node, in[0], scratch_a);
  float* c = f32_out(out);

  // Batch strides in elements, 0 along broadcast dims.
  const auto batch_strides = [&](const Dims& d, int64_t mat) {
    const size_t rank = d.size() - 2;
    const Dims own(d.begin(), d.end() - 2);
    const std::vector<int64_t> cs = contiguous_strides(own);
    std::vector<int64_t> s(batch.size(), 0);
    for (size_t i = 0; i < rank; ++i) s[batch.size() - rank + i] = own[i] == 1 ? 0 : cs[i] * mat;
    return s;
  };
  const bool fold = b_batches == 1 && !p.transpose_a && a_batches == batches;
  const bool panels = b_batches == 1 && in[1].dtype != DataType::kFLOAT && k > 0;

  if (!panels) {
    Scratch scratch_b;
    const float* b = as_f32(node, in[1], scratch_b);
    if (fold) {
      gemm(false, p.transpose_b, batches * m, n, k, 1.0f, a, lda, b, ldb, 0.0f, c, n);
      return;
    }
    const std::array<std::vector<int64_t>, 2> strides = {batch_strides(ad, a_mat),
                                                         batch_strides(bd, b_mat)};
    // One gemm per batch, in order; OpenBLAS threads each call (calling it from several of
    // our own threads at once would oversubscribe the cores).
    for_each_row<2>(batch, strides, 0, batches,
                    [&](int64_t row, const std::array<int64_t, 2>& off) {
                      gemm(p.transpose_a, p.transpose_b, m, n, k, 1.0f, a + off[0], lda, b + off[1],
                           ldb, 0.0f, c + row * m * n, n);
                    });
    return;
  }

  // Shared reduced-precision b: widen `width` output columns at a time. Panels are spread
  // over the threads; inside a thread each gemm runs its tiles inline (same tiling, same sums).
  const int64_t width = std::min(n, std::max<int64_t>(16, kPanelElements / k));
  const int64_t num_panels = (n + width - 1) / width;
  const std::array<std::vector<int64_t>, 1> a_strides = {batch_strides(ad, a_mat)};
  const DataType bt = in[1].dtype;
  const int es = dtype_bits(bt) / 8;
  const auto* b = static_cast<const uint8_t*>(in[1].data);
  parallel_for(num_panels, 1, [&](int64_t p0, int64_t p1) {
    Scratch panel(static_cast<size_t>(width * k));
    for (int64_t pi = p0; pi < p1; ++pi) {
      const int64_t n0 = pi * width, w = std::min(width, n - n0);
      if (p.transpose_b) {  // b is [N, K]: the panel is rows n0..n0+w, contiguous
        to_f32(bt, b + n0 * k * es, panel.data(), w * k);
      } else {  // b is [K, N]: columns n0..n0+w of every row
        for (int64_t r = 0; r < k; ++r) to_f32(bt, b + (r * n + n0) * es, panel.data() + r * w, w);
      }
      const int64_t ldp = p.transpose_b ? k : w;
      if (fold) {
        gemm(false, p.transpose_b, batches * m, w, k, 1.0f, a, lda, panel.data(), ldp, 0.0f, c + n0,
             n);
        continue;
      }
      for_each_row<1>(batch, a_strides, 0, batches,
                      [&](int64_t row, const std::array<int64_t, 1>& off) {
                        gemm(p.transpose_a, p.transpose_b, m, w, k, 1.0f, a + off[0], lda,
                             panel.data(), ldp, 0.0f, c + row * m * n + n0, n);
                      });
    }
  });
}

}  // namespace bindery::cpu::detail

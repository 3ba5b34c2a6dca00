// Weight-only int4 matmul (kMATMUL_INT4): y = x · Wᵀ with W in GPTQ's packing, never unpacked
// whole. Output columns are split into blocks of kBLOCK; each block's weights are dequantized
// into a small f32 panel ([kBLOCK, in], cache-resident) exactly as the reference does
// ((q - zero) is exact in f32, then one rounding by the scale), then every token's dot products
// with the panel are taken. Only the packed 4-bit words (a quarter of f16's bytes) stream from
// memory, which is what bounds decoding. Each output element is one sequential sum over the
// input dim, owned by one thread: results do not depend on thread counts or batch size.

#include <algorithm>
#include <vector>

#include "bindery/error.h"
#include "core/parallel.h"
#include "runtime/cpu/kernel_common.h"

namespace bindery::cpu::detail {

void run_matmul_int4(const GraphNode& node, Inputs in, const TensorRef& out) {
  const auto& p = std::get<Int4MatmulParams>(node.params);
  const int64_t n = p.in_features, m = p.out_features, groups = p.group_count;
  const int32_t offset = static_cast<int32_t>(p.zero_offset);
  Scratch x_scratch, s_scratch;
  const float* x = as_f32(node, in[0], x_scratch);
  const auto* qw = static_cast<const uint32_t*>(in[1].data);
  const auto* qz = static_cast<const uint32_t*>(in[2].data);
  const float* scales = as_f32(node, in[3], s_scratch);
  const auto* g_idx = static_cast<const int32_t*>(in[4].data);
  for (int64_t i = 0; i < n; ++i)
    if (g_idx[i] < 0 || g_idx[i] >= groups)
      throw Error(ErrorCode::kINVALID_ARGUMENT, node_label(node) + ": g_idx[" + std::to_string(i) +
                                                    "] = " + std::to_string(g_idx[i]) +
                                                    " is not a group (there are " +
                                                    std::to_string(groups) + ")");
  const int64_t tokens = numel(in[0]) / n;
  float* y = f32_out(out);
  constexpr int64_t kBLOCK = 32;
  const int64_t blocks = (m + kBLOCK - 1) / kBLOCK;
  parallel_for(blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const int64_t o0 = b * kBLOCK, width = std::min(kBLOCK, m - o0);
      std::vector<float> panel(static_cast<size_t>(width * n));
      for (int64_t i = 0; i < n; ++i) {
        const int64_t g = g_idx[i];
        const uint32_t* row = qw + (i / 8) * m;
        const int shift = 4 * static_cast<int>(i % 8);
        for (int64_t c = 0; c < width; ++c) {
          const int64_t o = o0 + c;
          const int32_t q = static_cast<int32_t>((row[o] >> shift) & 0xF);
          const int32_t zero =
              static_cast<int32_t>((qz[g * (m / 8) + o / 8] >> (4 * (o % 8))) & 0xF) + offset;
          panel[c * n + i] = static_cast<float>(q - zero) * scales[g * m + o];
        }
      }
      for (int64_t t = 0; t < tokens; ++t) {
        const float* xt = x + t * n;
        for (int64_t c = 0; c < width; ++c) {
          const float* w = panel.data() + c * n;
          float acc = 0;
          for (int64_t i = 0; i < n; ++i) acc += xt[i] * w[i];
          y[t * m + o0 + c] = acc;
        }
      }
    }
  });
}

}  // namespace bindery::cpu::detail

// RMSNorm and LayerNorm over the last dim.
//
// Rows are independent: they are split across threads, and each row's statistics are summed
// by one thread, in index order, in double (deterministic and accurate for wide rows).
// LayerNorm uses the two-pass population variance, mean((x - mean)^2), which does not lose
// precision when the mean is large compared with the spread.

#include "core/parallel.h"
#include "runtime/cpu/kernel_common.h"

namespace bindery::cpu::detail {

void run_rmsnorm(const GraphNode& node, Inputs in, const TensorRef& out) {
  const float eps = std::get<NormParams>(node.params).epsilon;
  Scratch sx, sw;
  const float* x = as_f32(node, in[0], sx);
  const float* w = as_f32(node, in[1], sw);
  float* y = f32_out(out);
  const int64_t d = in[0].dims.back();
  if (d == 0) return;
  const int64_t rows = numel(in[0]) / d;
  parallel_for(rows, std::max<int64_t>(1, kGrain / d), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const float* xr = x + r * d;
      float* yr = y + r * d;
      double ss = 0.0;
      for (int64_t j = 0; j < d; ++j) ss += static_cast<double>(xr[j]) * xr[j];
      const float scale = 1.0f / std::sqrt(static_cast<float>(ss / d) + eps);
      for (int64_t j = 0; j < d; ++j) yr[j] = xr[j] * scale * w[j];
    }
  });
}

void run_layernorm(const GraphNode& node, Inputs in, const TensorRef& out) {
  const float eps = std::get<NormParams>(node.params).epsilon;
  Scratch sx, sw, sb;
  const float* x = as_f32(node, in[0], sx);
  const float* w = as_f32(node, in[1], sw);
  const float* bias = optional_f32(node, in, 2, sb);
  float* y = f32_out(out);
  const int64_t d = in[0].dims.back();
  if (d == 0) return;
  const int64_t rows = numel(in[0]) / d;
  parallel_for(rows, std::max<int64_t>(1, kGrain / d), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const float* xr = x + r * d;
      float* yr = y + r * d;
      double sum = 0.0;
      for (int64_t j = 0; j < d; ++j) sum += xr[j];
      const double mean_d = sum / d;
      double var = 0.0;
      for (int64_t j = 0; j < d; ++j) {
        const double c = xr[j] - mean_d;
        var += c * c;
      }
      const float mean = static_cast<float>(mean_d);
      const float rstd = 1.0f / std::sqrt(static_cast<float>(var / d) + eps);
      if (bias) {
        for (int64_t j = 0; j < d; ++j) yr[j] = (xr[j] - mean) * rstd * w[j] + bias[j];
      } else {
        for (int64_t j = 0; j < d; ++j) yr[j] = (xr[j] - mean) * rstd * w[j];
      }
    }
  });
}

}  // namespace bindery::cpu::detail

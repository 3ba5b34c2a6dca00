// Inference batch norm and 2-D max / average pooling (NCHW).
//
// Batch norm is the textbook (x - mean) / sqrt(var + eps) * scale + bias, one channel plane at
// a time with the per-channel denominator computed once. (The builder's Conv+BN fold uses its
// own recipe; it is compared with this within a tolerance, not bit for bit.)
// Pooling walks each output plane directly: windows are small, so a direct loop beats any
// im2col. Max pooling ignores padded positions (as if they were -inf); average pooling divides
// by the window size when count_include_pad, else by the number of real elements in it.

#include <limits>

#include "core/parallel.h"
#include "runtime/cpu/kernel_common.h"

namespace bindery::cpu::detail {

void run_batchnorm(const GraphNode& node, Inputs in, const TensorRef& out) {
  const float eps = std::get<BatchNormParams>(node.params).epsilon;
  Scratch sx, s1, s2, s3, s4;
  const float* x = as_f32(node, in[0], sx);
  const float* scale = as_f32(node, in[1], s1);
  const float* bias = as_f32(node, in[2], s2);
  const float* mean = as_f32(node, in[3], s3);
  const float* var = as_f32(node, in[4], s4);
  float* y = f32_out(out);
  const Dims& d = in[0].dims;
  const int64_t c = d[1];
  const int64_t inner = volume(Dims(d.begin() + 2, d.end()));
  const int64_t planes = d[0] * c;
  parallel_for(planes, std::max<int64_t>(1, kGrain / std::max<int64_t>(inner, 1)),
               [&](int64_t b, int64_t e) {
                 for (int64_t pl = b; pl < e; ++pl) {
                   const int64_t ch = pl % c;
                   const float m = mean[ch], s = scale[ch], t = bias[ch];
                   const float denom = std::sqrt(var[ch] + eps);
                   const float* xs = x + pl * inner;
                   float* ys = y + pl * inner;
                   for (int64_t i = 0; i < inner; ++i) ys[i] = (xs[i] - m) / denom * s + t;
                 }
               });
}

void run_pooling(const GraphNode& node, Inputs in, const TensorRef& out) {
  const auto& p = std::get<PoolingParams>(node.params);
  Scratch sx;
  const float* x = as_f32(node, in[0], sx);
  float* y = f32_out(out);
  const int64_t h = in[0].dims[2], w = in[0].dims[3];
  const int64_t oh = out.dims[2], ow = out.dims[3];
  const int64_t kh = p.window[0], kw = p.window[1];
  const int64_t sh = p.stride[0], sw = p.stride[1];
  const int64_t ph = p.padding[0], pw = p.padding[1];
  const int64_t planes = out.dims[0] * out.dims[1];
  const bool is_max = p.type == PoolingType::kMAX;
  const float full = static_cast<float>(kh * kw);
  parallel_for(planes, std::max<int64_t>(1, kGrain / std::max<int64_t>(oh * ow * kh * kw, 1)),
               [&](int64_t b, int64_t e) {
                 for (int64_t pl = b; pl < e; ++pl) {
                   const float* xp = x + pl * h * w;
                   float* yp = y + pl * oh * ow;
                   for (int64_t i = 0; i < oh; ++i) {
                     const int64_t h0 = std::max<int64_t>(i * sh - ph, 0);
                     const int64_t h1 = std::min<int64_t>(i * sh - ph + kh, h);
                     for (int64_t j = 0; j < ow; ++j) {
                       const int64_t w0 = std::max<int64_t>(j * sw - pw, 0);
                       const int64_t w1 = std::min<int64_t>(j * sw - pw + kw, w);
                       float acc = is_max ? -std::numeric_limits<float>::infinity() : 0.0f;
                       for (int64_t r = h0; r < h1; ++r)
                         for (int64_t q = w0; q < w1; ++q) {
                           const float v = xp[r * w + q];
                           if (is_max)
                             acc = (v > acc || std::isnan(v)) ? v : acc;
                           else
                             acc += v;
                         }
                       if (!is_max)
                         acc /=
                             p.count_include_pad ? full : static_cast<float>((h1 - h0) * (w1 - w0));
                       yp[i * ow + j] = acc;
                     }
                   }
                 }
               });
}

}  // namespace bindery::cpu::detail

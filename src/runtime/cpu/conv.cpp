// 2-D convolution (NCHW) as im2col + gemm, one gemm per image and group, then the bias and
// the fused epilogue.
//
// im2col lays the receptive fields of one group out as a [C/groups * kh * kw, OH * OW] matrix
// (zeros where the window covers padding), so the convolution becomes
// kernel[O/groups, C/groups*kh*kw] x col, which OpenBLAS runs near peak. A 1x1 convolution
// with unit stride and no padding skips im2col: the input already is that matrix.
// The epilogue (bias, then ConvParams::epilogue in order) runs per output plane while it is
// hot in cache, with the same scalar functions the standalone unary/elementwise kernels use,
// so fusing never changes a bit.

#include "core/parallel.h"
#include "runtime/cpu/kernel_common.h"

namespace bindery::cpu::detail {

void run_conv(const GraphNode& node, Inputs in, const TensorRef& out) {
  const auto& p = std::get<ConvParams>(node.params);
  Scratch sx, sw, sb;
  const float* x = as_f32(node, in[0], sx);
  const float* w = as_f32(node, in[1], sw);
  const float* bias = optional_f32(node, in, 2, sb);
  float* y = f32_out(out);

  const int64_t batch = in[0].dims[0], c = in[0].dims[1], h = in[0].dims[2], wd = in[0].dims[3];
  const int64_t o = in[1].dims[0], cg = in[1].dims[1], kh = in[1].dims[2], kw = in[1].dims[3];
  const int64_t oh = out.dims[2], ow = out.dims[3];
  const int64_t groups = p.groups, og = o / groups;
  const int64_t sh = p.stride[0], sw_ = p.stride[1];
  const int64_t ph = p.padding[0], pw = p.padding[1];
  const int64_t dh = p.dilation[0], dw = p.dilation[1];
  const int64_t kdim = cg * kh * kw, plane = oh * ow;
  if (numel(out) == 0) return;

  const bool direct = kh == 1 && kw == 1 && sh == 1 && sw_ == 1 && ph == 0 && pw == 0;
  Scratch col(direct ? 0 : static_cast<size_t>(kdim * plane));
  for (int64_t n = 0; n < batch; ++n) {
    for (int64_t g = 0; g < groups; ++g) {
      const float* xin = x + (n * c + g * cg) * h * wd;
      const float* b = xin;
      if (!direct) {
        float* cp = col.data();
        parallel_for(kdim, std::max<int64_t>(1, kGrain / plane), [&](int64_t rb, int64_t re) {
          for (int64_t r = rb; r < re; ++r) {
            const int64_t ch = r / (kh * kw), ki = (r / kw) % kh, kj = r % kw;
            const float* xc = xin + ch * h * wd;
            float* row = cp + r * plane;
            for (int64_t i = 0; i < oh; ++i) {
              const int64_t ih = i * sh - ph + ki * dh;
              float* dst = row + i * ow;
              if (ih < 0 || ih >= h) {
                std::fill(dst, dst + ow, 0.0f);
                continue;
              }
              const float* src = xc + ih * wd;
              for (int64_t j = 0; j < ow; ++j) {
                const int64_t iw = j * sw_ - pw + kj * dw;
                dst[j] = iw >= 0 && iw < wd ? src[iw] : 0.0f;
              }
            }
          }
        });
        b = cp;
      }
      gemm(false, false, og, plane, kdim, 1.0f, w + g * og * kdim, kdim, b, plane, 0.0f,
           y + (n * o + g * og) * plane, plane);
    }
  }

  if (!bias && p.epilogue.empty()) return;
  parallel_for(batch * o, std::max<int64_t>(1, kGrain / plane), [&](int64_t b, int64_t e) {
    for (int64_t pl = b; pl < e; ++pl) {
      const int64_t ch = pl % o;
      float* v = y + pl * plane;
      if (bias) binary_scalar_inplace(ElementwiseOp::kSUM, v, bias[ch], plane);
      for (const EpilogueStep& s : p.epilogue) {
        if (s.is_unary)
          unary_inplace(s.unary, v, plane);
        else
          binary_scalar_inplace(s.binary, v,
                                s.constant.size() == 1 ? s.constant[0] : s.constant[ch], plane);
      }
    }
  });
}

}  // namespace bindery::cpu::detail

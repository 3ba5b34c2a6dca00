// Unary activations and math functions, one flat parallel loop.
//
// The op is a template parameter (no branch in the loop; relu, neg, abs and sqrt vectorise),
// and the scalar function is the same unary_fn the fused convolution epilogue calls, which
// keeps fused and unfused results bit-identical.

#include "core/parallel.h"
#include "runtime/cpu/kernel_common.h"

namespace bindery::cpu {

float apply_unary(UnaryOp op, float x) {
  return detail::with_unary(op, [&]<UnaryOp Op>() { return detail::unary_fn<Op>(x); });
}

namespace detail {

void unary_inplace(UnaryOp op, float* x, int64_t n) {
  with_unary(op, [&]<UnaryOp Op>() {
    for (int64_t i = 0; i < n; ++i) x[i] = unary_fn<Op>(x[i]);
  });
}

void run_unary(const GraphNode& node, Inputs in, const TensorRef& out) {
  const auto& p = std::get<UnaryParams>(node.params);
  Scratch scratch;
  const float* x = as_f32(node, in[0], scratch);
  float* y = f32_out(out);
  with_unary(p.op, [&]<UnaryOp Op>() {
    parallel_for(numel(out), kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) y[i] = unary_fn<Op>(x[i]);
    });
  });
}

}  // namespace detail
}  // namespace bindery::cpu

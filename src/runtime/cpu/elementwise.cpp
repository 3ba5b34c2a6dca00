// Binary elementwise ops with numpy broadcasting.
//
// Both operands get broadcast strides (0 along broadcast dims), then dims that every operand
// walks contiguously are merged, so the common cases (same shape, a row vector, a scalar)
// become one long inner loop with strides 1 or 0 that the compiler vectorises. The op is a
// template parameter so the inner loop has no branch; it is the same binary_fn the fused
// convolution epilogue calls, which keeps fused and unfused results bit-identical.

#include "core/parallel.h"
#include "runtime/cpu/kernel_common.h"

namespace bindery::cpu {

float apply_binary(ElementwiseOp op, float a, float b) {
  return detail::with_binary(op, [&]<ElementwiseOp Op>() { return detail::binary_fn<Op>(a, b); });
}

namespace detail {

void binary_scalar_inplace(ElementwiseOp op, float* x, float c, int64_t n) {
  with_binary(op, [&]<ElementwiseOp Op>() {
    for (int64_t i = 0; i < n; ++i) x[i] = binary_fn<Op>(x[i], c);
  });
}

namespace {

/// Element strides of `d` broadcast to `out` (right-aligned; 0 where d has 1 or no dim).
std::vector<int64_t> broadcast_strides(const Dims& d, const Dims& out) {
  std::vector<int64_t> s(out.size(), 0);
  const std::vector<int64_t> cs = contiguous_strides(d);
  const size_t lead = out.size() - d.size();
  for (size_t i = 0; i < d.size(); ++i) s[lead + i] = d[i] == 1 ? 0 : cs[i];
  return s;
}

template <ElementwiseOp Op>
void binary_row(const float* a, int64_t sa, const float* b, int64_t sb, float* o, int64_t n) {
  if (sa == 1 && sb == 1) {
    for (int64_t j = 0; j < n; ++j) o[j] = binary_fn<Op>(a[j], b[j]);
  } else if (sa == 1 && sb == 0) {
    const float bv = *b;
    for (int64_t j = 0; j < n; ++j) o[j] = binary_fn<Op>(a[j], bv);
  } else if (sa == 0 && sb == 1) {
    const float av = *a;
    for (int64_t j = 0; j < n; ++j) o[j] = binary_fn<Op>(av, b[j]);
  } else {
    for (int64_t j = 0; j < n; ++j) o[j] = binary_fn<Op>(a[j * sa], b[j * sb]);
  }
}

}  // namespace

void run_elementwise(const GraphNode& node, Inputs in, const TensorRef& out) {
  const auto& p = std::get<ElementwiseParams>(node.params);
  Scratch scratch_a, scratch_b;
  const float* a = as_f32(node, in[0], scratch_a);
  const float* b = as_f32(node, in[1], scratch_b);
  float* o = f32_out(out);
  if (numel(out) == 0) return;

  // The output is contiguous; coalesce over (a, b, out) so merged dims stay valid for all three.
  Dims dims = out.dims;
  std::array<std::vector<int64_t>, 3> s = {broadcast_strides(in[0].dims, out.dims),
                                           broadcast_strides(in[1].dims, out.dims),
                                           contiguous_strides(out.dims)};
  coalesce<3>(dims, s);
  const int64_t inner = dims.back();
  const int64_t sa = s[0].back(), sb = s[1].back();
  const Dims outer(dims.begin(), dims.end() - 1);
  std::array<std::vector<int64_t>, 3> outer_strides;
  for (int k = 0; k < 3; ++k) outer_strides[k].assign(s[k].begin(), s[k].end() - 1);
  const int64_t rows = volume(outer);

  with_binary(p.op, [&]<ElementwiseOp Op>() {
    parallel_for(rows, std::max<int64_t>(1, kGrain / inner), [&](int64_t begin, int64_t end) {
      for_each_row<3>(outer, outer_strides, begin, end,
                      [&](int64_t, const std::array<int64_t, 3>& off) {
                        binary_row<Op>(a + off[0], sa, b + off[1], sb, o + off[2], inner);
                      });
    });
  });
}

}  // namespace detail
}  // namespace bindery::cpu

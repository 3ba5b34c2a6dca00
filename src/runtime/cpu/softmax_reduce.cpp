// Softmax along one axis, and sum / mean / max reductions over any set of axes.
//
// Softmax is the numerically stable three-pass form (max, sum of exp(x - max), scale) per
// line; lines are independent, so they are split across threads while each line is summed by
// one thread in index order (deterministic). Sums accumulate in double, which costs nothing
// here (the loop is bound by exp and memory) and makes long rows accurate.
//
// A reduction splits the input's dims into kept and reduced ones, merges adjacent dims of
// each kind, and gives each output element to one thread, which walks its reduced elements in
// row-major order: results never depend on the thread count.

#include <algorithm>
#include <limits>

#include "core/parallel.h"
#include "runtime/cpu/kernel_common.h"

namespace bindery::cpu::detail {

namespace {
int norm_axis(int axis, size_t rank) { return axis < 0 ? axis + static_cast<int>(rank) : axis; }
}  // namespace

void run_softmax(const GraphNode& node, Inputs in, const TensorRef& out) {
  const auto& p = std::get<SoftmaxParams>(node.params);
  Scratch scratch;
  const float* x = as_f32(node, in[0], scratch);
  float* y = f32_out(out);
  const Dims& d = in[0].dims;
  const int axis = norm_axis(p.axis, d.size());
  const int64_t outer = volume(Dims(d.begin(), d.begin() + axis));
  const int64_t len = d[axis];
  const int64_t inner = volume(Dims(d.begin() + axis + 1, d.end()));
  if (len == 0) return;
  parallel_for(outer * inner, std::max<int64_t>(1, kGrain / len), [&](int64_t b, int64_t e) {
    for (int64_t line = b; line < e; ++line) {
      const int64_t base = (line / inner) * len * inner + line % inner;
      const float* xs = x + base;
      float* ys = y + base;
      float m = -std::numeric_limits<float>::infinity();
      for (int64_t j = 0; j < len; ++j) m = std::max(m, xs[j * inner]);
      double sum = 0.0;
      for (int64_t j = 0; j < len; ++j) {
        const float v = std::exp(xs[j * inner] - m);
        ys[j * inner] = v;
        sum += v;
      }
      const float s = static_cast<float>(sum);
      for (int64_t j = 0; j < len; ++j) ys[j * inner] /= s;
    }
  });
}

void run_reduce(const GraphNode& node, Inputs in, const TensorRef& out) {
  const auto& p = std::get<ReduceParams>(node.params);
  Scratch scratch;
  const float* x = as_f32(node, in[0], scratch);
  float* y = f32_out(out);
  const Dims& d = in[0].dims;
  std::vector<bool> reduced(d.size(), false);
  for (int a : p.axes) reduced[norm_axis(a, d.size())] = true;
  const std::vector<int64_t> cs = contiguous_strides(d);
  Dims kept_dims, red_dims;
  std::array<std::vector<int64_t>, 1> kept_s, red_s;
  for (size_t i = 0; i < d.size(); ++i) {
    (reduced[i] ? red_dims : kept_dims).push_back(d[i]);
    (reduced[i] ? red_s : kept_s)[0].push_back(cs[i]);
  }
  const int64_t outputs = volume(kept_dims);
  const int64_t count = volume(red_dims);
  if (outputs == 0) return;
  coalesce<1>(kept_dims, kept_s);
  coalesce<1>(red_dims, red_s);
  const int64_t red_inner = red_dims.back(), red_stride = red_s[0].back();
  const Dims red_outer(red_dims.begin(), red_dims.end() - 1);
  const std::array<std::vector<int64_t>, 1> red_outer_s = {
      std::vector<int64_t>(red_s[0].begin(), red_s[0].end() - 1)};
  const int64_t red_rows = count == 0 ? 0 : volume(red_outer);

  // Each element of the kept index space is one output, in output order.
  const ReduceOp op = p.op;
  parallel_for(outputs, std::max<int64_t>(1, kGrain / std::max<int64_t>(count, 1)),
               [&](int64_t b, int64_t e) {
                 for_each_row<1>(
                     kept_dims, kept_s, b, e, [&](int64_t o, const std::array<int64_t, 1>& base) {
                       const float* xs = x + base[0];
                       if (op == ReduceOp::kMAX) {
                         float m = -std::numeric_limits<float>::infinity();
                         for_each_row<1>(red_outer, red_outer_s, 0, red_rows,
                                         [&](int64_t, const std::array<int64_t, 1>& off) {
                                           const float* r = xs + off[0];
                                           for (int64_t j = 0; j < red_inner; ++j) {
                                             const float v = r[j * red_stride];
                                             if (v > m || std::isnan(v)) m = v;
                                           }
                                         });
                         y[o] = m;
                         return;
                       }
                       double sum = 0.0;
                       for_each_row<1>(red_outer, red_outer_s, 0, red_rows,
                                       [&](int64_t, const std::array<int64_t, 1>& off) {
                                         const float* r = xs + off[0];
                                         for (int64_t j = 0; j < red_inner; ++j)
                                           sum += r[j * red_stride];
                                       });
                       if (op == ReduceOp::kAVG) sum /= static_cast<double>(count);
                       y[o] = static_cast<float>(sum);
                     });
               });
}

}  // namespace bindery::cpu::detail

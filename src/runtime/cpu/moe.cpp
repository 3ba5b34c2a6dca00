// Sparse mixture of experts (Mixtral): top-k routing, then each expert's gated MLP over the
// tokens routed to it.
//
// Routing mirrors transformers' MixtralTopKRouter: a stable f32 softmax of each token's router
// logits, then the top_k probabilities picked exactly as torch.topk does on the CPU (the same
// standard-library selection on (value, index) pairs with the same comparator, NaN above
// every number), so that even tied probabilities, as a zero router gives, route to the same
// experts; then renormalised by their sum. Tokens are then grouped by expert, so each expert
// that any token chose runs as two matmuls over all its tokens at once (gate|up, then down)
// through the same matmul kernel as a dense linear layer: one large gemm in prefill, the
// memory-bound gemv path when decoding. Reduced-precision expert weights are widened panel by
// panel inside that kernel, never as a whole expert or stack. Only chosen experts' weights are
// read, which is the point of an MoE at decode time.
//
// Each token's output sums its experts' weighted outputs in increasing expert order, as
// MixtralExperts' index_add_ loop does. Every step depends on shapes only (not on thread
// counts), so results are deterministic; and since a token's rows go through the dense matmul
// kernel, a token gives the same bits alone or beside others wherever a dense layer does (up
// to 8 tokens per expert on the matrix-vector path: batched decoding equals one-by-one).

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "runtime/cpu/kernel_common.h"

namespace bindery::cpu::detail {

MoeRoute moe_route(const MoeParams& p, const float* logits, int64_t tokens) {
  const int64_t e = p.num_experts, k = p.top_k;
  MoeRoute r;
  r.experts.resize(static_cast<size_t>(tokens * k));
  r.weights.resize(static_cast<size_t>(tokens * k));
  using Entry = std::pair<float, int64_t>;  // torch's topk queue: (value, index)
  const auto larger = [](const Entry& a, const Entry& b) {
    return (std::isnan(a.first) && !std::isnan(b.first)) || a.first > b.first;
  };
  std::vector<Entry> queue(static_cast<size_t>(e));
  for (int64_t t = 0; t < tokens; ++t) {
    const float* l = logits + t * e;
    float m = -std::numeric_limits<float>::infinity();
    for (int64_t j = 0; j < e; ++j) m = std::max(m, l[j]);
    double sum = 0.0;  // as run_softmax: f32 exponentials, summed in order in double
    for (int64_t j = 0; j < e; ++j) {
      queue[j] = {std::exp(l[j] - m), j};
      sum += queue[j].first;
    }
    const auto s = static_cast<float>(sum);
    for (Entry& q : queue) q.first /= s;
    // torch's topk_impl_loop: a partial sort when k is small against the row, else nth_element
    // and a sort of the k - 1 entries before the k-th.
    if (k * 64 <= e) {
      std::partial_sort(queue.begin(), queue.begin() + k, queue.end(), larger);
    } else {
      std::nth_element(queue.begin(), queue.begin() + (k - 1), queue.end(), larger);
      std::sort(queue.begin(), queue.begin() + (k - 1), larger);
    }
    int64_t* chosen = r.experts.data() + t * k;
    float* w = r.weights.data() + t * k;
    float total = 0.0f;
    for (int64_t i = 0; i < k; ++i) {
      chosen[i] = queue[i].second;
      w[i] = queue[i].first;
      total += w[i];
    }
    if (p.normalize_top_k)
      for (int64_t i = 0; i < k; ++i) w[i] /= total;
  }
  return r;
}

namespace {

// Rows [row0, row0 + rows) of a stacked [*, cols] weight as its own matrix.
TensorRef rows_of(const TensorRef& w, int64_t row0, int64_t rows) {
  const int64_t cols = w.dims[1];
  const int64_t bytes = static_cast<int64_t>(dtype_bits(w.dtype) / 8);
  return {w.dtype, {rows, cols}, static_cast<uint8_t*>(w.data) + row0 * cols * bytes};
}

}  // namespace

void run_moe(const GraphNode& node, Inputs in, const TensorRef& out) {
  const auto& p = std::get<MoeParams>(node.params);
  const int64_t tokens = in[0].dims[0], h = in[0].dims[1], f = p.ffn_size;
  const int64_t e = p.num_experts, k = p.top_k;
  float* y = f32_out(out);
  std::fill_n(y, tokens * h, 0.0f);
  if (tokens == 0 || h == 0) return;
  Scratch sx, sl;
  const float* x = as_f32(node, in[0], sx);
  const MoeRoute r = moe_route(p, as_f32(node, in[1], sl), tokens);

  // Tokens of each expert in increasing token order, with the weight each gives it.
  std::vector<std::vector<int64_t>> rows(static_cast<size_t>(e));
  std::vector<std::vector<float>> gains(static_cast<size_t>(e));
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t i = 0; i < k; ++i) {
      rows[r.experts[t * k + i]].push_back(t);
      gains[r.experts[t * k + i]].push_back(r.weights[t * k + i]);
    }

  // Each expert's two products run through the matmul kernel as x · Wᵀ.
  GraphNode mm;
  mm.name = node.name;
  mm.type = LayerType::kMATMUL;
  mm.params = MatMulParams{false, true};
  Scratch xs, gate_up, act, down;
  for (int64_t ex = 0; ex < e; ++ex) {
    const auto n = static_cast<int64_t>(rows[ex].size());
    if (n == 0) continue;
    xs.resize(static_cast<size_t>(n * h));
    for (int64_t i = 0; i < n; ++i) std::memcpy(&xs[i * h], x + rows[ex][i] * h, h * sizeof(float));
    gate_up.resize(static_cast<size_t>(n * 2 * f));
    const TensorRef a{DataType::kFLOAT, {n, h}, xs.data()};
    run_matmul(mm, std::array{a, rows_of(in[2], ex * 2 * f, 2 * f)},
               {DataType::kFLOAT, {n, 2 * f}, gate_up.data()});
    act.resize(static_cast<size_t>(n * f));
    with_unary(p.activation, [&]<UnaryOp Op>() {
      for (int64_t i = 0; i < n; ++i) {
        const float* g = &gate_up[i * 2 * f];
        for (int64_t j = 0; j < f; ++j) act[i * f + j] = unary_fn<Op>(g[j]) * g[f + j];
      }
    });
    down.resize(static_cast<size_t>(n * h));
    const TensorRef hidden{DataType::kFLOAT, {n, f}, act.data()};
    run_matmul(mm, std::array{hidden, rows_of(in[3], ex * h, h)},
               {DataType::kFLOAT, {n, h}, down.data()});
    for (int64_t i = 0; i < n; ++i) {
      float* yo = y + rows[ex][i] * h;
      const float* d = &down[i * h];
      const float g = gains[ex][i];
      for (int64_t j = 0; j < h; ++j) yo[j] += d[j] * g;
    }
  }
}

}  // namespace bindery::cpu::detail

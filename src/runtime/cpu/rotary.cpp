// Rotary position embeddings (rotate-half layout), with dynamic NTK scaling per sequence.

#include <algorithm>
#include <cmath>
#include <map>

#include "bindery/error.h"
#include "core/parallel.h"
#include "runtime/cpu/kernel_common.h"

namespace bindery::cpu::detail {
namespace {

int64_t index_at(const TensorRef& t, int64_t i) {
  return t.dtype == DataType::kINT64 ? static_cast<const int64_t*>(t.data)[i]
                                     : static_cast<const int32_t*>(t.data)[i];
}

// transformers' _compute_dynamic_ntk_parameters for a sequence of length `len`.
std::vector<float> dynamic_inv_freq(const RotaryParams& p, int64_t len) {
  const auto dim = static_cast<double>(2 * p.inv_freq.size());
  const double factor = p.dynamic_factor;
  const double base =
      p.theta * std::pow(factor * static_cast<double>(len) / p.dynamic_max_positions - (factor - 1),
                         dim / (dim - 2));
  std::vector<float> f(p.inv_freq.size());
  for (size_t i = 0; i < f.size(); ++i)
    f[i] = static_cast<float>(1.0 / std::pow(base, static_cast<double>(2 * i) / dim));
  return f;
}

}  // namespace

void run_rotary(const GraphNode& node, Inputs in, const TensorRef& out) {
  const auto& p = std::get<RotaryParams>(node.params);
  Scratch scratch;
  const float* x = as_f32(node, in[0], scratch);
  const TensorRef& positions = in[1];
  const bool have_seq = in.size() > 2 && in[2].data != nullptr;
  const int64_t tokens = in[0].dims[0];
  const int64_t width = p.num_heads * p.head_dim;
  const auto half = static_cast<int64_t>(p.inv_freq.size());
  for (int64_t t = 0; t < tokens; ++t)
    if (index_at(positions, t) < 0)
      throw Error(ErrorCode::kINVALID_ARGUMENT,
                  node_label(node) + ": position " + std::to_string(index_at(positions, t)) +
                      " of token " + std::to_string(t) + " is negative");

  // Dynamic scaling: each sequence's frequencies follow its largest position in this run.
  std::map<int64_t, std::vector<float>> per_sequence;
  std::vector<const float*> freq_of(tokens, p.inv_freq.data());
  if (p.dynamic_factor != 0) {
    std::map<int64_t, int64_t> longest;
    for (int64_t t = 0; t < tokens; ++t) {
      const int64_t s = have_seq ? index_at(in[2], t) : 0;
      longest[s] = std::max(longest[s], index_at(positions, t) + 1);
    }
    for (const auto& [s, len] : longest)
      if (len > p.dynamic_max_positions) per_sequence[s] = dynamic_inv_freq(p, len);
    for (int64_t t = 0; t < tokens; ++t) {
      auto it = per_sequence.find(have_seq ? index_at(in[2], t) : 0);
      if (it != per_sequence.end()) freq_of[t] = it->second.data();
    }
  }

  float* y = f32_out(out);
  parallel_for(tokens, std::max<int64_t>(1, kGrain / std::max<int64_t>(width, 1)),
               [&](int64_t begin, int64_t end) {
                 std::vector<float> cos_(half), sin_(half);
                 for (int64_t t = begin; t < end; ++t) {
                   // As transformers: angle = f32(position) * f32(inv_freq), then cos/sin.
                   const auto pos = static_cast<float>(index_at(positions, t));
                   for (int64_t i = 0; i < half; ++i) {
                     const float angle = pos * freq_of[t][i];
                     cos_[i] = std::cos(angle) * p.attention_factor;
                     sin_[i] = std::sin(angle) * p.attention_factor;
                   }
                   for (int64_t h = 0; h < p.num_heads; ++h) {
                     const float* xi = x + t * width + h * p.head_dim;
                     float* yi = y + t * width + h * p.head_dim;
                     for (int64_t i = 0; i < half; ++i) {
                       const float a = xi[i], b = xi[i + half];
                       yi[i] = a * cos_[i] - b * sin_[i];
                       yi[i + half] = b * cos_[i] + a * sin_[i];
                     }
                     for (int64_t i = 2 * half; i < p.head_dim; ++i) yi[i] = xi[i];
                   }
                 }
               });
}

}  // namespace bindery::cpu::detail

// Causal grouped-query attention over the execution context's KV cache.
//
// A run holds T tokens of one or many sequences. First every token's key and value are written
// into its sequence's cache at its position; then each (token, head) attends to the positions
// of its own sequence up to its own (and no further back than the sliding window). Writing
// first lets a prompt, or a prompt and the tokens after it, be processed in one run.

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>

#include "bindery/error.h"
#include "core/parallel.h"
#include "runtime/cpu/kernel_common.h"

namespace bindery::cpu {

KvCache::Sequence& KvCache::sequence(int64_t cache_index, int64_t seq_id) {
  if (static_cast<size_t>(cache_index) >= caches_.size()) caches_.resize(cache_index + 1);
  return caches_[cache_index][seq_id];
}

int64_t KvCache::length(int64_t seq_id, int64_t cache_index) const {
  if (static_cast<size_t>(cache_index) >= caches_.size()) return 0;
  auto it = caches_[cache_index].find(seq_id);
  return it == caches_[cache_index].end() ? 0 : it->second.length;
}

void KvCache::reset() { caches_.clear(); }

void KvCache::reset_sequence(int64_t seq_id) {
  for (auto& c : caches_) c.erase(seq_id);
}

namespace detail {
namespace {

// Sequence ids are cache keys; a bound keeps a corrupt input from allocating without limit.
constexpr int64_t kMAX_SEQ_ID = 1 << 20;

int64_t index_at(const TensorRef& t, int64_t i) {
  return t.dtype == DataType::kINT64 ? static_cast<const int64_t*>(t.data)[i]
                                     : static_cast<const int32_t*>(t.data)[i];
}

struct SequenceRun {
  int64_t first = -1;  // first position in this run
  int64_t last = -1;   // last position in this run
};

// Each sequence's tokens must sit at consecutive positions that continue its cache (or restart
// lower, dropping what came after). Checked before any cache changes.
std::map<int64_t, SequenceRun> check_positions(const GraphNode& node, const AttentionParams& p,
                                               const TensorRef& positions, const TensorRef& seq_ids,
                                               int64_t tokens, const KvCache& cache) {
  std::map<int64_t, SequenceRun> runs;
  for (int64_t t = 0; t < tokens; ++t) {
    const int64_t s = index_at(seq_ids, t), pos = index_at(positions, t);
    const std::string where = node_label(node) + ": token " + std::to_string(t) + " (sequence " +
                              std::to_string(s) + ", position " + std::to_string(pos) + ")";
    check(s >= 0 && s < kMAX_SEQ_ID, ErrorCode::kINVALID_ARGUMENT,
          where + ": sequence ids must be in [0, " + std::to_string(kMAX_SEQ_ID) + ")");
    check(pos >= 0 && pos < p.max_seq_len, ErrorCode::kINVALID_ARGUMENT,
          where + ": positions must be in [0, " + std::to_string(p.max_seq_len) +
              ") (the engine's max sequence length)");
    SequenceRun& r = runs[s];
    if (r.first < 0) {
      const int64_t held = cache.length(s, p.cache_index);
      check(pos <= held, ErrorCode::kINVALID_ARGUMENT,
            where + ": the sequence's cache holds " + std::to_string(held) +
                " positions, so the next one must be at most " + std::to_string(held));
      r.first = pos;
    } else {
      check(pos == r.last + 1, ErrorCode::kINVALID_ARGUMENT,
            where + ": follows position " + std::to_string(r.last) +
                " of the same sequence; positions within a run must be consecutive");
    }
    r.last = pos;
  }
  return runs;
}

}  // namespace

void run_attention(const GraphNode& node, Inputs in, const TensorRef& out, KvCache& cache) {
  const auto& p = std::get<AttentionParams>(node.params);
  const int64_t tokens = in[0].dims[0];
  const int64_t d = p.head_dim, q_width = p.num_heads * d, kv_width = p.num_kv_heads * d;
  const int64_t group = p.num_heads / p.num_kv_heads;
  Scratch sq, sk, sv;
  const float* q = as_f32(node, in[0], sq);
  const float* k = as_f32(node, in[1], sk);
  const float* v = as_f32(node, in[2], sv);
  const std::map<int64_t, SequenceRun> runs = check_positions(node, p, in[3], in[4], tokens, cache);

  // Grow each sequence's buffers, then write this run's keys and values.
  std::map<int64_t, KvCache::Sequence*> seqs;
  for (const auto& [s, r] : runs) {
    KvCache::Sequence& c = cache.sequence(p.cache_index, s);
    const auto need = static_cast<size_t>((r.last + 1) * kv_width);
    if (c.keys.size() < need) {
      const size_t grown = std::max(
          need, std::min(c.keys.size() * 2, static_cast<size_t>(p.max_seq_len * kv_width)));
      c.keys.resize(grown);
      c.values.resize(grown);
    }
    c.length = r.last + 1;
    seqs[s] = &c;
  }
  std::vector<KvCache::Sequence*> seq_of(tokens);
  for (int64_t t = 0; t < tokens; ++t) {
    KvCache::Sequence* c = seqs[index_at(in[4], t)];
    seq_of[t] = c;
    const int64_t pos = index_at(in[3], t);
    std::copy_n(k + t * kv_width, kv_width, c->keys.data() + pos * kv_width);
    std::copy_n(v + t * kv_width, kv_width, c->values.data() + pos * kv_width);
  }

  float* y = f32_out(out);
  parallel_for(tokens * p.num_heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores;
    for (int64_t th = begin; th < end; ++th) {
      const int64_t t = th / p.num_heads, h = th % p.num_heads, kvh = h / group;
      const int64_t pos = index_at(in[3], t);
      const int64_t lo =
          p.sliding_window > 0 ? std::max<int64_t>(0, pos - p.sliding_window + 1) : 0;
      const KvCache::Sequence& c = *seq_of[t];
      const float* qv = q + t * q_width + h * d;
      scores.resize(static_cast<size_t>(pos - lo + 1));
      float max_score = -std::numeric_limits<float>::infinity();
      for (int64_t j = lo; j <= pos; ++j) {
        const float* kj = c.keys.data() + j * kv_width + kvh * d;
        float dot = 0;
        for (int64_t i = 0; i < d; ++i) dot += qv[i] * kj[i];
        scores[j - lo] = dot * p.scale;
        max_score = std::max(max_score, scores[j - lo]);
      }
      float sum = 0;
      for (float& s : scores) sum += (s = std::exp(s - max_score));
      float* yo = y + t * q_width + h * d;
      std::fill_n(yo, d, 0.0f);
      for (int64_t j = lo; j <= pos; ++j) {
        const float w = scores[j - lo] / sum;
        const float* vj = c.values.data() + j * kv_width + kvh * d;
        for (int64_t i = 0; i < d; ++i) yo[i] += w * vj[i];
      }
    }
  });
}

}  // namespace detail
}  // namespace bindery::cpu

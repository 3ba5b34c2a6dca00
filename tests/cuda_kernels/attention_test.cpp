// kv_cache_append, decode_attention and prefill_attention against a CPU reference: fp64
// softmax attention on the same bf16/f16 q, k, v. The kernels round P to the element type for
// the tensor cores and round the output, so per element |out - ref| <= 1e-2 (bf16) or 2e-3
// (f16) with |v| <= 1, and ||out - ref|| / ||ref|| <= 1e-2 / 3e-3. Cache positions no sequence
// has written hold NaN, so a kernel that reads past a sequence's end fails loudly.

#include <algorithm>
#include <numeric>

#include "cuda_test_util.h"

namespace bindery::cuda::testing {
namespace {

constexpr uint16_t kNaN = 0xFFFF;

struct Tolerance {
  float abs;
  double rel;
};
Tolerance tolerance(DataType t) {
  return t == DataType::kBF16 ? Tolerance{1e-2f, 1e-2} : Tolerance{2e-3f, 3e-3};
}

/// Host mirror of one layer's cache.
struct HostCache {
  int slots, max_len, hkv, d;
  std::vector<uint16_t> k, v;
  HostCache(int s, int l, int h, int dd)
      : slots(s), max_len(l), hkv(h), d(dd), k(size_t(s) * l * h * dd, kNaN), v(k) {}
  size_t at(int slot, int pos, int h) const {
    return ((size_t(slot) * max_len + pos) * hkv + h) * d;
  }
};

/// softmax(q·K^T / sqrt(d)) V over keys [lo, hi) of `slot`, for query head row `q` (d values).
std::vector<double> reference_row(DataType t, const HostCache& c, int slot, int kvh, int lo, int hi,
                                  const uint16_t* q) {
  const double scale = 1.0 / std::sqrt(double(c.d));
  std::vector<double> s(std::max(hi - lo, 0));
  double mx = -INFINITY;
  for (int j = lo; j < hi; ++j) {
    double acc = 0;
    const size_t base = c.at(slot, j, kvh);
    for (int i = 0; i < c.d; ++i) acc += double(to_f32(t, q[i])) * to_f32(t, c.k[base + i]);
    s[j - lo] = acc * scale;
    mx = std::max(mx, s[j - lo]);
  }
  std::vector<double> out(c.d, 0.0);
  double sum = 0;
  for (int j = lo; j < hi; ++j) {
    const double p = std::exp(s[j - lo] - mx);
    sum += p;
    const size_t base = c.at(slot, j, kvh);
    for (int i = 0; i < c.d; ++i) out[i] += p * to_f32(t, c.v[base + i]);
  }
  for (auto& o : out) o = sum > 0 ? o / sum : 0.0;
  return out;
}

KvCacheView view(const HostCache& c, DeviceMem& k, DeviceMem& v, DataType t) {
  KvCacheView cv;
  cv.k = k.get();
  cv.v = v.get();
  cv.dtype = t;
  cv.num_slots = c.slots;
  cv.max_seq_len = c.max_len;
  cv.num_kv_heads = c.hkv;
  cv.head_dim = c.d;
  return cv;
}

/// Compares got (element type) with reference rows; returns false after reporting.
void compare(DataType t, const std::vector<uint16_t>& got, const std::vector<double>& ref,
             const std::string& what) {
  const Tolerance tol = tolerance(t);
  std::vector<float> g(got.size()), r(ref.size());
  int bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    g[i] = to_f32(t, got[i]);
    r[i] = float(ref[i]);
    if (!(std::fabs(g[i] - r[i]) <= tol.abs) && ++bad <= 5)
      ADD_FAILURE() << what << ": element " << i << " = " << g[i] << ", expected " << r[i];
  }
  EXPECT_EQ(bad, 0) << what;
  EXPECT_LE(rel_l2(g, r), tol.rel) << what;
}

struct DecodeCase {
  DataType dtype;
  std::vector<int> lens;  // context length of each sequence after this step
  int hq, hkv, d, window;
};

void run_decode(const DecodeCase& c, std::mt19937& rng) {
  const int b = int(c.lens.size());
  const int max_len = *std::max_element(c.lens.begin(), c.lens.end());
  std::string desc = std::string(name(c.dtype)) + " hq=" + std::to_string(c.hq) +
                     " hkv=" + std::to_string(c.hkv) + " d=" + std::to_string(c.d) +
                     " window=" + std::to_string(c.window) + " lens=";
  for (int l : c.lens) desc += std::to_string(l) + ",";
  SCOPED_TRACE(desc);
  const DataType t = c.dtype;
  HostCache hc(b + 2, max_len + 7, c.hkv, c.d);
  std::vector<int32_t> slots(b + 2);
  std::iota(slots.begin(), slots.end(), 0);
  std::shuffle(slots.begin(), slots.end(), rng);
  slots.resize(b);
  // Earlier tokens (positions < len - 1) already cached; the rest stays NaN.
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  for (int s = 0; s < b; ++s)
    for (int p = 0; p + 1 < c.lens[s]; ++p)
      for (int h = 0; h < c.hkv; ++h)
        for (int i = 0; i < c.d; ++i) {
          hc.k[hc.at(slots[s], p, h) + i] = from_f32(t, u(rng));
          hc.v[hc.at(slots[s], p, h) + i] = from_f32(t, u(rng));
        }
  const auto q = random_half(t, size_t(b) * c.hq * c.d, rng, -2.f, 2.f);
  const auto k_new = random_half(t, size_t(b) * c.hkv * c.d, rng);
  const auto v_new = random_half(t, size_t(b) * c.hkv * c.d, rng);

  DeviceMem dk(hc.k), dv(hc.v), dq(q), dkn(k_new), dvn(v_new), dslots(slots),
      dlens(std::vector<int32_t>(c.lens.begin(), c.lens.end())), dout(q.size() * 2);
  SeqBatchView batch;
  batch.num_seqs = b;
  batch.slots = dslots.as<int32_t>();
  batch.context_lens = dlens.as<int32_t>();
  batch.max_context_len = max_len;
  const KvCacheView cv = view(hc, dk, dv, t);
  kv_cache_append(dkn.get(), dvn.get(), b, batch, cv, nullptr);
  const size_t ws = decode_attention_workspace_bytes(b, c.hq, c.hkv, c.d, max_len);
  DeviceMem dws(ws), dout2(q.size() * 2);
  // The workspace stays poisoned (0xFF): decode_attention must not rely on its contents.
  decode_attention(dq.get(), dout.get(), c.hq, batch, cv, c.window, dws.get(), ws, nullptr);
  // Again on the same workspace: the counters must have gone back to zero.
  decode_attention(dq.get(), dout2.get(), c.hq, batch, cv, c.window, dws.get(), ws, nullptr);
  const auto out = dout.read<uint16_t>(q.size());
  EXPECT_TRUE(dout2.read<uint16_t>(q.size()) == out) << "second call on the workspace differs";
  // A caller that keeps the workspace to itself may skip the clearing (kZERO).
  DeviceMem dout3(q.size() * 2);
  decode_attention(dq.get(), dout3.get(), c.hq, batch, cv, c.window, dws.get(), ws, nullptr,
                   WorkspaceCounters::kZERO);
  EXPECT_TRUE(dout3.read<uint16_t>(q.size()) == out) << "a kZERO call differs";

  // The append wrote exactly the new rows.
  for (int s = 0; s < b; ++s)
    for (int h = 0; h < c.hkv; ++h)
      for (int i = 0; i < c.d; ++i) {
        hc.k[hc.at(slots[s], c.lens[s] - 1, h) + i] = k_new[(size_t(s) * c.hkv + h) * c.d + i];
        hc.v[hc.at(slots[s], c.lens[s] - 1, h) + i] = v_new[(size_t(s) * c.hkv + h) * c.d + i];
      }
  EXPECT_TRUE(dk.read<uint16_t>(hc.k.size()) == hc.k) << "k cache differs after append";
  EXPECT_TRUE(dv.read<uint16_t>(hc.v.size()) == hc.v) << "v cache differs after append";

  std::vector<double> ref(q.size());
  const int group = c.hq / c.hkv;
  for (int s = 0; s < b; ++s) {
    const int len = c.lens[s];
    const int lo = c.window > 0 ? std::max(0, len - c.window) : 0;
    for (int h = 0; h < c.hq; ++h) {
      const auto row = reference_row(t, hc, slots[s], h / group, lo, len,
                                     q.data() + (size_t(s) * c.hq + h) * c.d);
      std::copy(row.begin(), row.end(), ref.begin() + (size_t(s) * c.hq + h) * c.d);
    }
  }
  compare(t, out, ref, "decode out");
}

TEST(CudaDecodeAttention, MatchesReferenceAcrossLengthsGqaAndWindows) {
  BINDERY_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(23);
  const DataType bf = DataType::kBF16, hf = DataType::kHALF;
  const DecodeCase cases[] = {
      {bf, {1}, 32, 8, 128, 0},                                   // first token: one key
      {bf, {1, 63, 64, 65, 1000}, 32, 8, 128, 0},                 // tile edges, GQA 4
      {bf, {8192}, 32, 8, 128, 0},                                // long context, many splits
      {bf, {20001}, 8, 1, 128, 0},                                // GQA 8, odd long length
      {bf, {300, 5000}, 16, 16, 64, 0},                           // MHA (ratio 1), d = 64
      {bf, {5000, 200, 4097}, 16, 4, 128, 256},                   // sliding window (Mistral-style)
      {hf, {777, 3}, 14, 2, 64, 0},                               // f16, Qwen2-0.5B heads (ratio 7)
      {bf, {2500}, 32, 2, 128, 1000},                             // 16 q heads per kv head + window
      {hf, {130, 129, 128, 127, 1, 2, 4096, 64}, 8, 8, 64, 100},  // 8 sequences
  };
  for (const auto& c : cases) run_decode(c, rng);
}

struct PrefillCase {
  DataType dtype;
  std::vector<int> new_tokens;  // per sequence
  std::vector<int> prefix;      // tokens already cached per sequence (chunked prefill)
  int hq, hkv, d, window;
};

void run_prefill(const PrefillCase& c, std::mt19937& rng) {
  const int b = int(c.new_tokens.size());
  std::string desc = std::string(name(c.dtype)) + " hq=" + std::to_string(c.hq) +
                     " hkv=" + std::to_string(c.hkv) + " d=" + std::to_string(c.d) +
                     " window=" + std::to_string(c.window) + " new/prefix=";
  for (int s = 0; s < b; ++s)
    desc += std::to_string(c.new_tokens[s]) + "/" + std::to_string(c.prefix[s]) + ",";
  SCOPED_TRACE(desc);
  const DataType t = c.dtype;
  std::vector<int32_t> cu(b + 1, 0), lens(b);
  int max_new = 0, max_ctx = 0;
  for (int s = 0; s < b; ++s) {
    cu[s + 1] = cu[s] + c.new_tokens[s];
    lens[s] = c.prefix[s] + c.new_tokens[s];
    max_new = std::max(max_new, c.new_tokens[s]);
    max_ctx = std::max(max_ctx, lens[s]);
  }
  const int tokens = cu[b];
  HostCache hc(b + 1, max_ctx + 3, c.hkv, c.d);
  std::vector<int32_t> slots(b);
  for (int s = 0; s < b; ++s) slots[s] = (s * 7 + 1) % (b + 1);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  for (int s = 0; s < b; ++s)
    for (int p = 0; p < c.prefix[s]; ++p)
      for (int h = 0; h < c.hkv; ++h)
        for (int i = 0; i < c.d; ++i) {
          hc.k[hc.at(slots[s], p, h) + i] = from_f32(t, u(rng));
          hc.v[hc.at(slots[s], p, h) + i] = from_f32(t, u(rng));
        }
  const auto q = random_half(t, size_t(tokens) * c.hq * c.d, rng, -2.f, 2.f);
  const auto k = random_half(t, size_t(tokens) * c.hkv * c.d, rng);
  const auto v = random_half(t, size_t(tokens) * c.hkv * c.d, rng);
  DeviceMem dk(hc.k), dv(hc.v), dq(q), dkn(k), dvn(v), dslots(slots), dlens(lens), dcu(cu),
      dout(q.size() * 2);
  SeqBatchView batch;
  batch.num_seqs = b;
  batch.cu_seqlens = dcu.as<int32_t>();
  batch.slots = dslots.as<int32_t>();
  batch.context_lens = dlens.as<int32_t>();
  batch.max_context_len = max_ctx;
  batch.max_new_tokens = max_new;
  const KvCacheView cv = view(hc, dk, dv, t);
  kv_cache_append(dkn.get(), dvn.get(), tokens, batch, cv, nullptr);
  prefill_attention(dq.get(), dout.get(), tokens, c.hq, batch, cv, c.window, nullptr);
  const auto out = dout.read<uint16_t>(q.size());

  for (int s = 0; s < b; ++s)
    for (int i = 0; i < c.new_tokens[s]; ++i)
      for (int h = 0; h < c.hkv; ++h)
        for (int e = 0; e < c.d; ++e) {
          const size_t src = (size_t(cu[s] + i) * c.hkv + h) * c.d + e;
          hc.k[hc.at(slots[s], c.prefix[s] + i, h) + e] = k[src];
          hc.v[hc.at(slots[s], c.prefix[s] + i, h) + e] = v[src];
        }
  EXPECT_TRUE(dk.read<uint16_t>(hc.k.size()) == hc.k) << "k cache differs after append";
  EXPECT_TRUE(dv.read<uint16_t>(hc.v.size()) == hc.v) << "v cache differs after append";

  std::vector<double> ref(q.size());
  const int group = c.hq / c.hkv;
  for (int s = 0; s < b; ++s)
    for (int i = 0; i < c.new_tokens[s]; ++i) {
      const int pos = c.prefix[s] + i;
      const int lo = c.window > 0 ? std::max(0, pos - c.window + 1) : 0;
      for (int h = 0; h < c.hq; ++h) {
        const size_t row = (size_t(cu[s] + i) * c.hq + h) * c.d;
        const auto r = reference_row(t, hc, slots[s], h / group, lo, pos + 1, q.data() + row);
        std::copy(r.begin(), r.end(), ref.begin() + row);
      }
    }
  compare(t, out, ref, "prefill out");
}

TEST(CudaPrefillAttention, MatchesReferenceForPackedCausalGqaAndWindows) {
  BINDERY_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(29);
  const DataType bf = DataType::kBF16, hf = DataType::kHALF;
  const PrefillCase cases[] = {
      {bf, {1}, {0}, 8, 2, 128, 0},                        // a single token
      {bf, {300}, {0}, 8, 2, 128, 0},                      // one sequence, GQA 4
      {bf, {64, 65, 1, 130}, {0, 0, 0, 0}, 8, 8, 128, 0},  // packed, tile edges, MHA
      {bf, {100, 37}, {500, 64}, 16, 2, 128, 0},           // chunked prefill over a prefix
      {bf, {333}, {40}, 8, 1, 64, 50},                     // window shorter than a tile, GQA 8
      {hf, {200, 70}, {0, 10}, 14, 2, 64, 128},            // f16, ratio 7, window
      {hf, {513}, {0}, 4, 4, 128, 0},
  };
  for (const auto& c : cases) run_prefill(c, rng);
}

// rope_kv_append is rotary_embedding on q and k followed by kv_cache_append, to the bit: packed
// prefill rows of two sequences, q rotated in place and into another buffer, and a sequence
// whose slot is outside the cache (its q still rotated, nothing written to the cache).
TEST(CudaRopeKvAppend, EqualsRotaryThenAppend) {
  BINDERY_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(41);
  for (const DataType t : {DataType::kBF16, DataType::kHALF})
    for (const bool in_place : {true, false}) {
      SCOPED_TRACE(std::string(name(t)) + (in_place ? " in place" : " into q_out"));
      const int hq = 8, hkv = 2, d = 128, slots_n = 4, max_len = 40;
      const std::vector<int32_t> cu = {0, 5, 12, 13}, slots = {2, 0, 7}, lens = {5, 30, 3};
      const int tokens = cu.back(), b = 3;
      std::vector<int32_t> pos;
      for (int s = 0; s < b; ++s) {
        const int n = cu[s + 1] - cu[s];
        for (int i = 0; i < n; ++i) pos.push_back(lens[s] - n + i);
      }
      std::vector<float> inv_freq(d / 2);
      for (int i = 0; i < d / 2; ++i)
        inv_freq[i] = float(1.0 / std::pow(500000.0, double(2 * i) / d));
      const auto q = random_half(t, size_t(tokens) * hq * d, rng, -3.f, 3.f);
      const auto k = random_half(t, size_t(tokens) * hkv * d, rng, -3.f, 3.f);
      const auto v = random_half(t, size_t(tokens) * hkv * d, rng);
      const size_t cache_elems = size_t(slots_n) * max_len * hkv * d;
      DeviceMem dpos(pos), dinv(inv_freq), dcu(cu), dslots(slots), dlens(lens);
      SeqBatchView batch;
      batch.num_seqs = b;
      batch.cu_seqlens = dcu.as<int32_t>();
      batch.slots = dslots.as<int32_t>();
      batch.context_lens = dlens.as<int32_t>();
      batch.max_context_len = 30;
      batch.max_new_tokens = 7;
      // Reference: the separate kernels.
      DeviceMem rq(q), rk(k), rv(v), rkc(cache_elems * 2), rvc(cache_elems * 2);
      rotary_embedding(t, rq.get(), rk.get(), dpos.as<int32_t>(), dinv.as<float>(), 1.f, tokens, hq,
                       hkv, d, nullptr);
      KvCacheView rc{rkc.get(), rvc.get(), t, slots_n, max_len, hkv, d};
      kv_cache_append(rk.get(), rv.get(), tokens, batch, rc, nullptr);
      // Fused.
      DeviceMem fq(q), fk(k), fv(v), fq_out(q.size() * 2), fkc(cache_elems * 2),
          fvc(cache_elems * 2);
      KvCacheView fc{fkc.get(), fvc.get(), t, slots_n, max_len, hkv, d};
      void* q_out = in_place ? fq.get() : fq_out.get();
      rope_kv_append(fq.get(), q_out, fk.get(), fv.get(), dpos.as<int32_t>(), dinv.as<float>(), 1.f,
                     tokens, hq, batch, fc, nullptr);
      const auto want_q = rq.read<uint16_t>(q.size());
      EXPECT_TRUE((in_place ? fq : fq_out).read<uint16_t>(q.size()) == want_q) << "q differs";
      if (!in_place) {
        EXPECT_TRUE(fq.read<uint16_t>(q.size()) == q) << "q source was written";
      }
      EXPECT_TRUE(fk.read<uint16_t>(k.size()) == k) << "k source was written";
      EXPECT_TRUE(fkc.read<uint16_t>(cache_elems) == rkc.read<uint16_t>(cache_elems))
          << "k cache differs";
      EXPECT_TRUE(fvc.read<uint16_t>(cache_elems) == rvc.read<uint16_t>(cache_elems))
          << "v cache differs";
    }
}

TEST(CudaAttention, RejectsBadArgumentsNamingThem) {
  BINDERY_REQUIRE_CUDA_DEVICE();
  DeviceMem buf(1 << 20), ints(std::vector<int32_t>{0, 1});
  KvCacheView cv;
  cv.k = cv.v = buf.get();
  cv.num_slots = 1;
  cv.max_seq_len = 16;
  cv.num_kv_heads = 2;
  cv.head_dim = 96;  // unsupported
  SeqBatchView batch;
  batch.num_seqs = 1;
  batch.slots = batch.context_lens = batch.cu_seqlens = ints.as<int32_t>();
  batch.max_context_len = 1;
  EXPECT_THROW(decode_attention(buf.get(), buf.get(), 4, batch, cv, 0, nullptr, 0, nullptr), Error);
  cv.head_dim = 128;
  EXPECT_THROW(decode_attention(buf.get(), buf.get(), 3, batch, cv, 0, nullptr, 0, nullptr), Error);
  batch.max_context_len = 17;  // past max_seq_len
  EXPECT_THROW(decode_attention(buf.get(), buf.get(), 4, batch, cv, 0, nullptr, 0, nullptr), Error);
  batch.cu_seqlens = nullptr;
  EXPECT_THROW(prefill_attention(buf.get(), buf.get(), 1, 4, batch, cv, 0, nullptr), Error);
}

}  // namespace
}  // namespace bindery::cuda::testing

// argmax (torch.argmax semantics: ties to the lowest index, NaN wins) and sample() against a
// CPU replica of its definition (kernels.h): p ~ exp(logit / T), keep the top_k (ties kept),
// then the smallest top set reaching top_p of their mass, draw by inverse CDF (most likely
// first on the fast path, index order otherwise) with the same Philox uniform. Float sums differ in
// order between CPU and GPU, so a pick is accepted when the reference CDF brackets u within 1e-5; a
// frequency test checks the distribution.

#include <algorithm>
#include <cstring>
#include <limits>

#include "cuda_test_util.h"
#include "runtime/cuda/philox.h"

namespace bindery::cuda::testing {
namespace {

uint32_t order_key(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

TEST(CudaArgmax, MatchesTorchArgmaxIncludingTiesAndNan) {
  BINDERY_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(31);
  for (int vocab : {1, 7, 1000, 128256}) {
    const int rows = 6;
    std::vector<float> x(size_t(rows) * vocab);
    std::normal_distribution<float> nd(0.f, 3.f);
    for (auto& v : x) v = nd(rng);
    std::vector<int> want(rows);
    for (int r = 0; r < rows; ++r) {
      float* row = x.data() + size_t(r) * vocab;
      if (r == 1 && vocab > 2) {  // a tie: the lower index wins
        const int a = vocab / 3, b = vocab - 1;
        row[a] = row[b] = 100.f;
      }
      if (r == 2 && vocab > 2) row[vocab / 2] = row[vocab - 1] = std::nanf("");  // first NaN
      if (r == 3) std::fill(row, row + vocab, -INFINITY);                        // all -inf: 0
      if (r == 4) row[vocab - 1] = 1e30f;                                        // last element
      int best = 0;
      for (int i = 1; i < vocab; ++i) {
        const bool in = std::isnan(row[i]), bn = std::isnan(row[best]);
        if (bn) break;
        if (in || row[i] > row[best]) best = i;
      }
      want[r] = best;
    }
    DeviceMem dx(x), dids(size_t(rows) * 4);
    argmax(dx.as<float>(), rows, vocab, dids.as<int32_t>(), nullptr);
    const auto got = dids.read<int32_t>(rows);
    for (int r = 0; r < rows; ++r) EXPECT_EQ(got[r], want[r]) << "vocab " << vocab << " row " << r;
  }
}

struct Reference {
  std::vector<char> keep;
  std::vector<double> e;   // exp(s - max) of kept tokens, 0 elsewhere
  std::vector<int> order;  // the kept tokens in the order the draw walks them
  double z = 0;
};

/// Key of the k-th largest of s (1-based).
uint32_t kth_key(const std::vector<float>& s, int k) {
  std::vector<uint32_t> keys(s.size());
  for (size_t i = 0; i < s.size(); ++i) keys[i] = order_key(s[i]);
  std::nth_element(keys.begin(), keys.begin() + (k - 1), keys.end(), std::greater<>());
  return keys[k - 1];
}

/// sample()'s definition (kernels.h), in double precision.
Reference reference(const float* x, int vocab, float temperature, int top_k, float top_p) {
  // Temperature does not change the order: thresholds and ties are on the logits themselves.
  const std::vector<float> s(x, x + vocab);
  const float mx = *std::max_element(s.begin(), s.end());
  const auto mass = [&](int i) { return std::exp((double(s[i]) - mx) / temperature); };
  const bool topk_on = top_k > 0 && top_k < vocab, topp_on = top_p < 1.f;
  Reference ref;
  ref.keep.assign(vocab, 0);
  ref.e.assign(vocab, 0.0);
  bool fast = topk_on || topp_on;
  if (fast) {  // candidates: top_k, or the 4096 most likely for top-p alone; ties kept
    const int want = topk_on ? top_k : std::min(4096, vocab);
    const uint32_t floor_key = want < vocab ? kth_key(s, want) : 0u;
    std::vector<int> cand;
    for (int i = 0; i < vocab; ++i)
      if (order_key(s[i]) >= floor_key) cand.push_back(i);
    fast = cand.size() <= 8192;
    if (fast) {
      std::sort(cand.begin(), cand.end(),
                [&](int a, int b) { return s[a] > s[b] || (s[a] == s[b] && a < b); });
      size_t keep = cand.size();
      if (topp_on) {
        double z_c = 0, z_all = 0;
        for (int i : cand) z_c += mass(i);
        for (int i = 0; i < vocab; ++i) z_all += mass(i);
        const double target = top_p * (topk_on || want == vocab ? z_c : z_all);
        fast = z_c >= target;
        double cum = 0;
        for (size_t j = 0; fast && j < cand.size(); ++j) {
          cum += mass(cand[j]);
          if (cum >= target) {
            keep = j + 1;
            while (keep < cand.size() && s[cand[keep]] == s[cand[j]]) ++keep;
            break;
          }
        }
      }
      cand.resize(keep);
      ref.order = cand;
    }
  }
  if (!fast) {  // slow path or no filter: thresholds over the row, index order
    uint32_t floor_key = topk_on ? kth_key(s, top_k) : 0u;
    if (topp_on) {
      std::vector<std::pair<float, int>> kept;
      double z = 0;
      for (int i = 0; i < vocab; ++i)
        if (order_key(s[i]) >= floor_key) kept.push_back({s[i], i}), z += mass(i);
      std::sort(kept.begin(), kept.end(), std::greater<>());
      double cum = 0;
      for (const auto& [v, i] : kept) {
        cum += mass(i);
        if (cum >= double(top_p) * z) {
          floor_key = std::max(floor_key, order_key(v));
          break;
        }
      }
    }
    ref.order.clear();
    for (int i = 0; i < vocab; ++i)
      if (order_key(s[i]) >= floor_key) ref.order.push_back(i);
  }
  for (int i : ref.order) ref.keep[i] = 1, ref.e[i] = mass(i), ref.z += ref.e[i];
  return ref;
}

TEST(CudaSample, PicksTheInverseCdfTokenOfTheFilteredDistribution) {
  BINDERY_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(37);
  struct Case {
    int vocab;
    float temperature;
    int top_k;
    float top_p;
  };
  const Case cases[] = {
      {128256, 1.0f, 0, 1.0f},   {128256, 0.7f, 50, 1.0f}, {128256, 0.8f, 0, 0.9f},
      {128256, 0.6f, 40, 0.95f}, {1000, 1.5f, 1, 1.0f},    {1000, 1.0f, 999, 0.5f},
      {3, 1.0f, 2, 0.3f},        {32000, 1.0f, 0, 0.05f},  {1000, 1.0f, 0, 0.5f},
      {5000, 1.0f, 3000, 0.99f},  // thousands of candidates, fast path
      {10000, 1.0f, 9000, 1.0f},  // more than 8192 candidates: slow path, index order
      {128256, 30.0f, 0, 0.9f},   // flat: the top-p set exceeds 4096 candidates (slow path)
      {128256, 1.0f, 0, 0.9f},    // top-p set of ~1000-2000: fast path
  };
  const int rows = 16;
  for (const auto& c : cases) {
    SCOPED_TRACE("vocab=" + std::to_string(c.vocab) + " T=" + std::to_string(c.temperature) +
                 " top_k=" + std::to_string(c.top_k) + " top_p=" + std::to_string(c.top_p));
    std::vector<float> x(size_t(rows) * c.vocab);
    std::normal_distribution<float> nd(0.f, 4.f);
    for (auto& v : x) v = nd(rng);
    SamplingParams sp;
    sp.temperature = c.temperature;
    sp.top_k = c.top_k;
    sp.top_p = c.top_p;
    sp.seed = 1234;
    sp.offset = 99;
    DeviceMem dx(x), dids(size_t(rows) * 4);
    sample(dx.as<float>(), rows, c.vocab, sp, dids.as<int32_t>(), nullptr);
    const auto got = dids.read<int32_t>(rows);
    for (int r = 0; r < rows; ++r) {
      const Reference ref =
          reference(x.data() + size_t(r) * c.vocab, c.vocab, c.temperature, c.top_k, c.top_p);
      const double u = philox_uniform(sp.seed, sp.offset, r);
      const int g = got[r];
      ASSERT_TRUE(g >= 0 && g < c.vocab) << "row " << r << " id " << g;
      EXPECT_TRUE(ref.keep[g]) << "row " << r << ": token " << g << " is filtered out";
      double before = 0;
      for (int i : ref.order) {
        if (i == g) break;
        before += ref.e[i];
      }
      const double lo = before / ref.z, hi = (before + ref.e[g]) / ref.z;
      EXPECT_TRUE(lo <= u + 1e-5 && u - 1e-5 <= hi)
          << "row " << r << ": token " << g << " covers [" << lo << ", " << hi << "), u = " << u;
    }
  }
}

TEST(CudaSample, GreedyWhenTemperatureIsZeroAndDeviceOffsetAdvances) {
  BINDERY_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(41);
  const int rows = 8, vocab = 5000;
  std::vector<float> x(size_t(rows) * vocab);
  std::normal_distribution<float> nd(0.f, 2.f);
  for (auto& v : x) v = nd(rng);
  DeviceMem dx(x), a(rows * 4), b(rows * 4), greedy(rows * 4), dev_off(std::vector<uint64_t>{5});
  SamplingParams sp;
  sp.temperature = 0.f;
  sample(dx.as<float>(), rows, vocab, sp, greedy.as<int32_t>(), nullptr);
  argmax(dx.as<float>(), rows, vocab, a.as<int32_t>(), nullptr);
  EXPECT_EQ(greedy.read<int32_t>(rows), a.read<int32_t>(rows));
  sp.temperature = 1.f;
  sp.offset = 7;
  sample(dx.as<float>(), rows, vocab, sp, a.as<int32_t>(), nullptr);
  sp.offset = 2;
  sp.device_offset = dev_off.as<uint64_t>();
  sample(dx.as<float>(), rows, vocab, sp, b.as<int32_t>(), nullptr);
  EXPECT_EQ(a.read<int32_t>(rows), b.read<int32_t>(rows));
}

TEST(CudaSample, FrequenciesFollowTheFilteredSoftmax) {
  BINDERY_REQUIRE_CUDA_DEVICE();
  // One distribution repeated over many rows: each row draws its own Philox number.
  const int rows = 40000, vocab = 6;
  const float logits[vocab] = {1.0f, 2.0f, 0.5f, 2.0f, -1.0f, 0.0f};
  std::vector<float> x(size_t(rows) * vocab);
  for (int r = 0; r < rows; ++r) std::copy(logits, logits + vocab, x.begin() + size_t(r) * vocab);
  SamplingParams sp;
  sp.temperature = 0.9f;
  sp.top_k = 4;  // drops ids 4 and 5
  sp.seed = 77;
  DeviceMem dx(x), dids(size_t(rows) * 4);
  sample(dx.as<float>(), rows, vocab, sp, dids.as<int32_t>(), nullptr);
  const auto got = dids.read<int32_t>(rows);
  const Reference ref = reference(logits, vocab, sp.temperature, sp.top_k, sp.top_p);
  std::vector<int> count(vocab, 0);
  for (int g : got) ++count[g];
  for (int i = 0; i < vocab; ++i) {
    const double p = ref.e[i] / ref.z;
    const double sigma = std::sqrt(rows * p * (1 - p)) + 1e-9;
    EXPECT_LE(std::fabs(count[i] - rows * p), 5 * sigma + 1) << "token " << i;
  }
  EXPECT_EQ(count[4] + count[5], 0);
}

}  // namespace
}  // namespace bindery::cuda::testing

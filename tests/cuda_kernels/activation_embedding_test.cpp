// silu_mul against transformers' arithmetic (silu in fp32 rounded, product rounded; two
// rounding steps allowed: expf may move silu by one, the product rounds once more) and
// embedding_gather (exact copy; a bad id gives a zero row and raises the flag instead of faulting).

#include "cuda_test_util.h"

namespace bindery::cuda::testing {
namespace {

TEST(CudaSiluMul, MatchesSiluTimesUp) {
  BINDERY_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(17);
  for (DataType t : {DataType::kBF16, DataType::kHALF})
    for (auto [rows, ffn] : {std::pair{1, 14336}, {33, 4864}, {2, 8}}) {
      SCOPED_TRACE(std::string(name(t)) + " rows=" + std::to_string(rows) +
                   " ffn=" + std::to_string(ffn));
      const auto gu = random_half(t, size_t(rows) * 2 * ffn, rng, -8.f, 8.f);
      DeviceMem dgu(gu), dout(size_t(rows) * ffn * 2);
      silu_mul(t, dgu.get(), dout.get(), rows, ffn, nullptr);
      const auto out = to_floats(t, dout.read<uint16_t>(size_t(rows) * ffn));
      int bad = 0;
      for (int r = 0; r < rows; ++r)
        for (int f = 0; f < ffn; ++f) {
          const float g = to_f32(t, gu[size_t(r) * 2 * ffn + f]);
          const float u = to_f32(t, gu[size_t(r) * 2 * ffn + ffn + f]);
          const float ref = round_to(t, round_to(t, float(g / (1.0 + std::exp(-double(g))))) * u);
          const float got = out[size_t(r) * ffn + f];
          if (!(std::fabs(got - ref) <= 2 * one_step(t, ref)) && ++bad <= 5)
            ADD_FAILURE() << "out[" << r << "][" << f << "] = " << got << ", expected " << ref;
        }
      EXPECT_EQ(bad, 0);
    }
}

TEST(CudaEmbedding, GathersRowsAndFlagsOutOfRangeIds) {
  BINDERY_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(19);
  const int vocab = 1000, hidden = 4096;
  const auto table = random_half(DataType::kBF16, size_t(vocab) * hidden, rng);
  DeviceMem dtable(table);
  for (bool with_bad : {false, true}) {
    std::vector<int32_t> ids = {0, 999, 5, 5, 123};
    if (with_bad) ids.insert(ids.begin() + 2, {1000, -1});
    DeviceMem dids(ids), dout(ids.size() * hidden * 2), dflag(std::vector<int>{0});
    embedding_gather(DataType::kBF16, dids.as<int32_t>(), dtable.get(), vocab, hidden, dout.get(),
                     int(ids.size()), dflag.as<int>(), nullptr);
    const auto out = dout.read<uint16_t>(ids.size() * hidden);
    EXPECT_EQ(dflag.read<int>(1)[0], with_bad ? 1 : 0);
    for (size_t i = 0; i < ids.size(); ++i) {
      const bool ok = ids[i] >= 0 && ids[i] < vocab;
      for (int j = 0; j < hidden; ++j) {
        const uint16_t want = ok ? table[size_t(ids[i]) * hidden + j] : 0;
        if (out[i * hidden + j] != want) {
          ADD_FAILURE() << "row " << i << " (id " << ids[i] << ") element " << j;
          break;
        }
      }
    }
  }
  // No flag pointer: still no fault.
  std::vector<int32_t> ids = {vocab + 5};
  DeviceMem dids(ids), dout(size_t(hidden) * 2);
  embedding_gather(DataType::kBF16, dids.as<int32_t>(), dtable.get(), vocab, hidden, dout.get(), 1,
                   nullptr, nullptr);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
}

}  // namespace
}  // namespace bindery::cuda::testing

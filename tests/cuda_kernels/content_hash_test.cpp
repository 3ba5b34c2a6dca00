// content_hash (delta refit's GPU hash): the same bytes hash the same at any address, and any
// change of one byte, or of the length, changes the hash.

#include "runtime/cuda/content_hash.h"

#include "cuda_test_util.h"

namespace bindery::cuda::testing {
namespace {

uint64_t hash_of(const void* d, int64_t bytes) {
  DeviceMem out(sizeof(uint64_t));
  content_hash(d, bytes, out.as<uint64_t>(), nullptr);
  return out.read<uint64_t>(1)[0];
}

TEST(CudaContentHash, SameBytesAtAnyAlignmentHashTheSame) {
  BINDERY_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(5);
  std::vector<unsigned char> bytes(1 << 20);
  for (auto& b : bytes) b = static_cast<unsigned char>(rng());
  std::vector<unsigned char> padded(bytes.size() + 16);
  for (int64_t n : {int64_t{0}, int64_t{5}, int64_t{8}, int64_t{1003}, int64_t{1} << 20}) {
    SCOPED_TRACE("bytes=" + std::to_string(n));
    std::vector<uint64_t> seen;
    for (int offset : {0, 1, 2, 3, 8}) {
      std::fill(padded.begin(), padded.end(), 0xAB);
      std::copy(bytes.begin(), bytes.begin() + n, padded.begin() + offset);
      DeviceMem d(padded);
      seen.push_back(hash_of(d.as<unsigned char>() + offset, n));
    }
    for (uint64_t h : seen) EXPECT_EQ(h, seen[0]);
  }
}

TEST(CudaContentHash, AnyOneByteChangeOrLengthChangesTheHash) {
  BINDERY_REQUIRE_CUDA_DEVICE();
  std::vector<unsigned char> bytes(4099, 0);
  DeviceMem d(bytes);
  const uint64_t base = hash_of(d.get(), 4099);
  EXPECT_NE(hash_of(d.get(), 4098), base);  // a zero byte less
  for (int64_t at : {0, 1, 7, 8, 2048, 4095, 4096, 4098}) {
    auto changed = bytes;
    changed[at] = 1;
    DeviceMem c(changed);
    EXPECT_NE(hash_of(c.get(), 4099), base) << "byte " << at;
  }
  // Swapping two words keeps their sum of values but not their positions.
  std::vector<uint64_t> words = {1, 2, 3, 4};
  std::vector<uint64_t> swapped = {2, 1, 3, 4};
  DeviceMem w(words), s(swapped);
  EXPECT_NE(hash_of(w.get(), 32), hash_of(s.get(), 32));
}

}  // namespace
}  // namespace bindery::cuda::testing

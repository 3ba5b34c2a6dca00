#pragma once
// Philox-4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11): a
// counter-based generator, so a decode step's random numbers are a pure function of (seed,
// step, row), reproducible on the host (tests) and independent of launch order or graph
// replay. Usable from host and device code.

#include <cstdint>

#if defined(__CUDACC__)
#define BINDERY_HOST_DEVICE __host__ __device__
#else
#define BINDERY_HOST_DEVICE
#endif

namespace bindery::cuda {

/// The four 32-bit outputs of Philox-4x32-10 for key `seed` and counter (offset, row).
BINDERY_HOST_DEVICE inline void philox4x32(uint64_t seed, uint64_t offset, uint64_t row,
                                           uint32_t (&out)[4]) {
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  uint32_t c0 = static_cast<uint32_t>(offset), c1 = static_cast<uint32_t>(offset >> 32);
  uint32_t c2 = static_cast<uint32_t>(row), c3 = static_cast<uint32_t>(row >> 32);
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = static_cast<uint64_t>(0xD2511F53u) * c0;
    const uint64_t p1 = static_cast<uint64_t>(0xCD9E8D57u) * c2;
    const uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    const uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  out[0] = c0;
  out[1] = c1;
  out[2] = c2;
  out[3] = c3;
}

/// A uniform float in [0, 1) with 24 random bits, from the first Philox output.
BINDERY_HOST_DEVICE inline float philox_uniform(uint64_t seed, uint64_t offset, uint64_t row) {
  uint32_t r[4];
  philox4x32(seed, offset, row, r);
  return static_cast<float>(r[0] >> 8) * (1.0f / 16777216.0f);
}

}  // namespace bindery::cuda

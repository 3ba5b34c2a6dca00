#pragma once
// A 64-bit content hash computed on the GPU, for delta refit from device memory: what
// hash64 (xxHash) is for host memory, at HBM speed instead of a download. Not cryptographic:
// every 8-byte word is mixed with its index (splitmix64's finaliser) and the mixes are summed,
// so any change of content or position changes the result except with odds of about 2^-64.
// Its values differ from hash64's for the same bytes; a source is only compared with hashes
// made the same way (a device hash never equals a host hash by accident either).

#include <cuda_runtime_api.h>

#include <cstdint>

namespace bindery::cuda {

/// Hashes `bytes` bytes at `data` (device memory, any alignment) into `*out` (device memory,
/// one uint64, overwritten). Queued on `stream`.
void content_hash(const void* data, int64_t bytes, uint64_t* out, cudaStream_t stream);

}  // namespace bindery::cuda

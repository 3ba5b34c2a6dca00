#include "runtime/cuda/content_hash.h"
#include "runtime/cuda/cuda_check.h"

namespace bindery::cuda {

namespace {

constexpr int kTHREADS = 256;

__device__ __forceinline__ uint64_t mix(uint64_t z) {  // splitmix64's finaliser
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

__device__ __forceinline__ uint64_t word_term(uint64_t word, uint64_t index) {
  return mix(word ^ mix(index + 0x9e3779b97f4a7c15ull));
}

// Sums word_term over the 8-byte words of the data (word i = bytes [8i, 8i + 8), wherever the
// data starts, so equal content hashes equally at any address); the tail is one last word.
template <bool kALIGNED>
__global__ void hash_kernel(const unsigned char* data, int64_t bytes, unsigned long long* out) {
  const int64_t words = bytes / 8;
  uint64_t sum = 0;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < words;
       i += int64_t{gridDim.x} * blockDim.x) {
    uint64_t w = 0;
    if constexpr (kALIGNED) {
      w = reinterpret_cast<const uint64_t*>(data)[i];
    } else {
      for (int b = 0; b < 8; ++b) w |= uint64_t{data[8 * i + b]} << (8 * b);
    }
    sum += word_term(w, static_cast<uint64_t>(i));
  }
  if (blockIdx.x == 0 && threadIdx.x == 0 && bytes > words * 8) {
    uint64_t w = 0;
    for (int64_t b = words * 8; b < bytes; ++b) w |= uint64_t{data[b]} << (8 * (b - words * 8));
    sum += word_term(w, static_cast<uint64_t>(words));
  }
  for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_down_sync(0xffffffffu, sum, offset);
  __shared__ uint64_t warp_sums[kTHREADS / 32];
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = sum;
  __syncthreads();
  if (threadIdx.x == 0) {
    uint64_t total = 0;
    for (int w = 0; w < kTHREADS / 32; ++w) total += warp_sums[w];
    atomicAdd(out, static_cast<unsigned long long>(total));
  }
}

__global__ void finish_kernel(unsigned long long* out, int64_t bytes) {
  *out = mix(*out ^ mix(static_cast<uint64_t>(bytes)));
}

}  // namespace

void content_hash(const void* data, int64_t bytes, uint64_t* out, cudaStream_t stream) {
  require(bytes >= 0, "content_hash", "negative size");
  check_cuda(cudaMemsetAsync(out, 0, sizeof(uint64_t), stream), "content_hash: clearing");
  // Sums are order-free, so the block count changes nothing but speed: up to 1024 blocks
  // cover 16 GB at HBM speed.
  const int64_t wanted = (bytes / 8 + kTHREADS - 1) / kTHREADS;
  const int blocks = static_cast<int>(wanted < 1 ? 1 : (wanted > 1024 ? 1024 : wanted));
  const auto* d = static_cast<const unsigned char*>(data);
  auto* o = reinterpret_cast<unsigned long long*>(out);
  if (reinterpret_cast<uintptr_t>(data) % 8 == 0)
    hash_kernel<true><<<blocks, kTHREADS, 0, stream>>>(d, bytes, o);
  else
    hash_kernel<false><<<blocks, kTHREADS, 0, stream>>>(d, bytes, o);
  finish_kernel<<<1, 1, 0, stream>>>(o, bytes);
  check_launch("content_hash");
}

}  // namespace bindery::cuda

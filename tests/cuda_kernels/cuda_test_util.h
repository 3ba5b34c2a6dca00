#pragma once
// Shared by the CUDA kernel tests: skip without a GPU, owned device buffers, random bf16/fp16
// host data, and tolerance checks against CPU references (fp32 math on the same rounded
// inputs).

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "bindery/dtype.h"
#include "bindery/error.h"
#include "core/half.h"
#include "runtime/cuda/kernels.h"

namespace bindery::cuda::testing {

/// Why there is no usable GPU, or "" when there is one.
inline std::string no_device_reason() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return cudaGetErrorString(e);
  }
  return n > 0 ? "" : "cudaGetDeviceCount reports 0 devices";
}

#define BINDERY_REQUIRE_CUDA_DEVICE()                                         \
  do {                                                                        \
    const std::string reason_ = ::bindery::cuda::testing::no_device_reason(); \
    if (!reason_.empty()) GTEST_SKIP() << "no CUDA device: " << reason_;      \
  } while (0)

#define CUDA_OK(expr)                                                      \
  do {                                                                     \
    const cudaError_t e_ = (expr);                                         \
    ASSERT_EQ(e_, cudaSuccess) << #expr << ": " << cudaGetErrorString(e_); \
  } while (0)

/// Owned device memory; poisoned with 0xFF bytes (NaN in every float type) so an output the
/// kernel forgot to write fails the comparison.
class DeviceMem {
 public:
  explicit DeviceMem(size_t bytes) : bytes_(bytes) {
    if (cudaMalloc(&p_, bytes ? bytes : 1) != cudaSuccess) throw std::runtime_error("cudaMalloc");
    cudaMemset(p_, 0xFF, bytes ? bytes : 1);
  }
  template <typename V>
  explicit DeviceMem(const std::vector<V>& host) : DeviceMem(host.size() * sizeof(V)) {
    cudaMemcpy(p_, host.data(), bytes_, cudaMemcpyHostToDevice);
  }
  DeviceMem(const DeviceMem&) = delete;
  DeviceMem& operator=(const DeviceMem&) = delete;
  ~DeviceMem() { cudaFree(p_); }
  void* get() const { return p_; }
  template <typename V>
  V* as() const {
    return static_cast<V*>(p_);
  }
  template <typename V>
  std::vector<V> read(size_t count) const {
    std::vector<V> out(count);
    if (cudaDeviceSynchronize() != cudaSuccess) throw std::runtime_error("kernel failed");
    cudaMemcpy(out.data(), p_, count * sizeof(V), cudaMemcpyDeviceToHost);
    return out;
  }
  template <typename V>
  void write(const std::vector<V>& host) {
    cudaMemcpy(p_, host.data(), host.size() * sizeof(V), cudaMemcpyHostToDevice);
  }

 private:
  void* p_ = nullptr;
  size_t bytes_;
};

inline const char* name(DataType t) { return t == DataType::kBF16 ? "bf16" : "f16"; }

inline float to_f32(DataType t, uint16_t v) {
  return t == DataType::kBF16 ? bf16_to_f32(v) : f16_to_f32(v);
}
inline uint16_t from_f32(DataType t, float v) {
  return t == DataType::kBF16 ? f32_to_bf16(v) : f32_to_f16(v);
}
/// The value `v` has once stored as `t`.
inline float round_to(DataType t, float v) { return to_f32(t, from_f32(t, v)); }

/// Random elements of `t`, uniform in [lo, hi).
inline std::vector<uint16_t> random_half(DataType t, size_t n, std::mt19937& rng, float lo = -1.f,
                                         float hi = 1.f) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<uint16_t> v(n);
  for (auto& e : v) e = from_f32(t, d(rng));
  return v;
}

inline std::vector<float> to_floats(DataType t, const std::vector<uint16_t>& v) {
  std::vector<float> f(v.size());
  for (size_t i = 0; i < v.size(); ++i) f[i] = to_f32(t, v[i]);
  return f;
}

/// One rounding step of `t` at the magnitude of `ref` (relative 2^-8 for bf16, 2^-11 for
/// f16), the most an element-wise kernel may differ from a reference that rounds the same way
/// but whose transcendental functions differ in the last fp32 bit.
inline float one_step(DataType t, float ref) {
  const float rel = t == DataType::kBF16 ? 1.0f / 128 : 1.0f / 1024;
  return rel * std::fabs(ref) + 1e-6f;
}

/// ||a - b|| / ||b||; NaN anywhere gives +inf.
inline double rel_l2(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

}  // namespace bindery::cuda::testing

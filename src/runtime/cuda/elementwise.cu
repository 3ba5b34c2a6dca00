#include "runtime/cuda/cuda_check.h"
#include "runtime/cuda/device_util.cuh"
#include "runtime/cuda/elementwise.h"

namespace bindery::cuda {
namespace {

constexpr int kTHREADS = 256;

int blocks_for(int64_t count) {
  const int64_t b = (count + kTHREADS - 1) / kTHREADS;
  return static_cast<int>(b < 65535 * 16 ? (b > 0 ? b : 1) : 65535 * 16);
}

__device__ __forceinline__ float apply(BinaryOp op, float a, float b) {
  switch (op) {
    case BinaryOp::kADD: return a + b;
    case BinaryOp::kSUB: return a - b;
    case BinaryOp::kMUL: return a * b;
    case BinaryOp::kDIV: return a / b;
    case BinaryOp::kMIN: return fminf(a, b);
    case BinaryOp::kMAX: return fmaxf(a, b);
  }
  return 0.f;
}

__device__ __forceinline__ float apply(UnaryFn fn, float x) {
  switch (fn) {
    case UnaryFn::kSILU: return x / (1.f + expf(-x));
    case UnaryFn::kRELU: return fmaxf(x, 0.f);
    case UnaryFn::kGELU_ERF: return 0.5f * x * (1.f + erff(x * 0.70710678118654752f));
    case UnaryFn::kGELU_TANH:
      return 0.5f * x * (1.f + tanhf(0.79788456080286536f * (x + 0.044715f * x * x * x)));
    case UnaryFn::kSIGMOID: return 1.f / (1.f + expf(-x));
    case UnaryFn::kTANH: return tanhf(x);
    case UnaryFn::kNEG: return -x;
  }
  return 0.f;
}

template <typename T>
__global__ void binary_kernel(BinaryOp op, const T* a, const T* b, T* out, int64_t count,
                              int64_t b_count) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < count;
       i += int64_t{gridDim.x} * blockDim.x)
    out[i] = from_float<T>(apply(op, to_float(a[i]), to_float(b[i % b_count])));
}

template <typename T>
__global__ void unary_kernel(UnaryFn fn, const T* x, T* out, int64_t count) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < count;
       i += int64_t{gridDim.x} * blockDim.x)
    out[i] = from_float<T>(apply(fn, to_float(x[i])));
}

__device__ __forceinline__ float load_as_float(const float* p) { return *p; }
template <typename T>
__device__ __forceinline__ float load_as_float(const T* p) {
  return to_float(*p);
}

template <typename From, typename To>
__global__ void convert_kernel(const From* x, To* out, int64_t count) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < count;
       i += int64_t{gridDim.x} * blockDim.x)
    out[i] = from_float<To>(load_as_float(x + i));
}

template <typename To>
void convert_from(DataType from, const void* x, To* out, int64_t count, cudaStream_t stream) {
  const int grid = blocks_for(count);
  if (from == DataType::kFLOAT)
    convert_kernel<<<grid, kTHREADS, 0, stream>>>(static_cast<const float*>(x), out, count);
  else if (from == DataType::kBF16)
    convert_kernel<<<grid, kTHREADS, 0, stream>>>(static_cast<const bf16*>(x), out, count);
  else
    convert_kernel<<<grid, kTHREADS, 0, stream>>>(static_cast<const fp16*>(x), out, count);
}

bool float_like(DataType t) {
  return t == DataType::kFLOAT || t == DataType::kBF16 || t == DataType::kHALF;
}

}  // namespace

void binary(DataType dtype, BinaryOp op, const void* a, const void* b, void* out, int64_t count,
            int64_t b_count, cudaStream_t stream) {
  require_half_dtype(dtype, "binary");
  require(b_count > 0 && count % b_count == 0, "binary",
          "b's " + std::to_string(b_count) + " elements do not tile a's " + std::to_string(count));
  if (count == 0) return;
  if (dtype == DataType::kBF16)
    binary_kernel<<<blocks_for(count), kTHREADS, 0, stream>>>(
        op, static_cast<const bf16*>(a), static_cast<const bf16*>(b), static_cast<bf16*>(out),
        count, b_count);
  else
    binary_kernel<<<blocks_for(count), kTHREADS, 0, stream>>>(
        op, static_cast<const fp16*>(a), static_cast<const fp16*>(b), static_cast<fp16*>(out),
        count, b_count);
  check_launch("binary_kernel");
}

void unary(DataType dtype, UnaryFn fn, const void* x, void* out, int64_t count,
           cudaStream_t stream) {
  require_half_dtype(dtype, "unary");
  if (count == 0) return;
  if (dtype == DataType::kBF16)
    unary_kernel<<<blocks_for(count), kTHREADS, 0, stream>>>(fn, static_cast<const bf16*>(x),
                                                             static_cast<bf16*>(out), count);
  else
    unary_kernel<<<blocks_for(count), kTHREADS, 0, stream>>>(fn, static_cast<const fp16*>(x),
                                                             static_cast<fp16*>(out), count);
  check_launch("unary_kernel");
}

void convert(DataType from, const void* x, DataType to, void* out, int64_t count,
             cudaStream_t stream) {
  require(float_like(from) && float_like(to), "convert",
          "converts f32, bf16 and f16 only, got " + std::string(dtype_name(from)) + " to " +
              std::string(dtype_name(to)));
  if (count == 0) return;
  if (to == DataType::kFLOAT)
    convert_from(from, x, static_cast<float*>(out), count, stream);
  else if (to == DataType::kBF16)
    convert_from(from, x, static_cast<bf16*>(out), count, stream);
  else
    convert_from(from, x, static_cast<fp16*>(out), count, stream);
  check_launch("convert_kernel");
}

}  // namespace bindery::cuda

#pragma once
// Small element-wise kernels the graph executor needs between the Llama kernels of kernels.h:
// residual adds and bias adds (a broadcast second operand), the gate·up product, activations.
// Same conventions as kernels.h (device pointers, queued on `stream`, bf16/f16 data, fp32
// math, one rounding to the data type per result).

#include <cuda_runtime_api.h>

#include <cstdint>

#include "bindery/dtype.h"

namespace bindery::cuda {

enum class BinaryOp { kADD, kSUB, kMUL, kDIV, kMIN, kMAX };
enum class UnaryFn { kSILU, kRELU, kGELU_ERF, kGELU_TANH, kSIGMOID, kTANH, kNEG };

/// out[i] = a[i] op b[i % b_count] for i < count (b broadcast over a's leading dims: a bias, or
/// b_count == count). `out` may alias `a`.
void binary(DataType dtype, BinaryOp op, const void* a, const void* b, void* out, int64_t count,
            int64_t b_count, cudaStream_t stream);

/// out[i] = fn(x[i]). `out` may alias `x`.
void unary(DataType dtype, UnaryFn fn, const void* x, void* out, int64_t count,
           cudaStream_t stream);

/// Converts `count` elements between f32 and bf16/f16 (either direction, or a plain copy).
void convert(DataType from, const void* x, DataType to, void* out, int64_t count,
             cudaStream_t stream);

}  // namespace bindery::cuda

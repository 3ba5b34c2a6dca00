#pragma once
// bindery::cuda — weight-only int4 matmul (kMATMUL_INT4, GPTQ packing) on the GPU (internal
// header). Same conventions as kernels.h: device pointers owned by the caller, work queued on
// `stream` and never synchronised, bf16/f16 activations with fp32 arithmetic, bad arguments
// throw Error(kINVALID_ARGUMENT / kDTYPE_MISMATCH), a failed launch Error(kDEVICE).
//
// The packing is Int4MatmulParams' (include/bindery/ops.h): qweight [in/8, out] holds 8 4-bit
// values per word along the input dim, qzeros [groups, out/8] 8 per word along the output dim,
// g_idx [in] the group of each input row, and
//   W[o, i] = (q[i, o] - (zero[g_idx[i], o] + zero_offset)) * scale[g_idx[i], o]   (f32).
// A g_idx entry outside [0, groups) cannot trap (that would kill every request in flight): it
// is read as the nearest valid group and raises kINT4_GROUP_ERROR in *error_flag (when
// error_flag is non-null), which the caller reads at its next synchronisation.

#include <cuda_runtime_api.h>

#include <cstdint>

#include "bindery/dtype.h"

namespace bindery::cuda {

/// The bit an int4 kernel ORs into *error_flag when g_idx names no group (the embedding
/// gather's out-of-range id writes 1).
constexpr int kINT4_GROUP_ERROR = 2;

/// One kMATMUL_INT4 layer's packed tensors (device memory, as the plan's slots hold them).
/// qweight and g_idx 16-byte aligned, scales 8-byte aligned (16 for f32), qzeros 4.
struct Int4Weights {
  const int32_t* qweight = nullptr;        // [in/8, out]
  const int32_t* qzeros = nullptr;         // [groups, out/8]
  const void* scales = nullptr;            // [groups, out], scale_dtype
  DataType scale_dtype = DataType::kHALF;  // kFLOAT, kHALF or kBF16
  const int32_t* g_idx = nullptr;          // [in]
  int in_features = 0;                     // a positive multiple of 8
  int out_features = 0;                    // a positive multiple of 8
  int groups = 1;                          // >= 1
  int zero_offset = 1;                     // 0 or 1 (AutoGPTQ v1 stores zero - 1)
};

/// y[m, out] = x[m, in] · Wᵀ for 1 <= m <= 8 rows (decode). x is `dtype` (bf16 or f16), y is
/// `dtype` or kFLOAT; x 16-byte aligned. Streams the packed words once with 16-byte loads and
/// dequantizes them in registers exactly as above (f32), accumulating in f32 on the CUDA
/// cores: each output element is one fixed-order sum, so results do not vary between runs.
void matmul_int4_gemv(DataType dtype, const void* x, const Int4Weights& w, DataType y_dtype,
                      void* y, int m, int* error_flag, cudaStream_t stream);

/// W[out, in] in `dtype` (bf16 or f16, row-major as a PyTorch Linear's weight): each element
/// computed in f32 as above and rounded once to `dtype`. For prefill, where a GEMM over the
/// dequantized matrix (cuBLAS) is faster than streaming the packed words once per 8 rows.
/// `out` is 16-byte aligned and holds in * out elements.
void dequantize_int4(DataType dtype, const Int4Weights& w, void* out, int* error_flag,
                     cudaStream_t stream);

}  // namespace bindery::cuda

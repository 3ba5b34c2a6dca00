#pragma once
// Host-side helpers shared by the kernel wrappers: argument checks that throw bindery::Error
// naming the argument, launch checks, and cached device properties. No device code here.

#include <cuda_runtime_api.h>

#include <cstdint>
#include <string>

#include "bindery/dtype.h"
#include "bindery/error.h"

namespace bindery::cuda {

/// Throws Error(kDEVICE) naming `what` unless `e` is cudaSuccess.
inline void check_cuda(cudaError_t e, const std::string& what) {
  if (e != cudaSuccess) throw Error(ErrorCode::kDEVICE, what + ": " + cudaGetErrorString(e));
}

/// Call right after a launch: a bad configuration only shows up in cudaGetLastError.
inline void check_launch(const char* kernel) {
  check_cuda(cudaGetLastError(), std::string("launch of ") + kernel);
}

/// Throws Error(kINVALID_ARGUMENT, "<op>: <message>") unless `condition` holds.
inline void require(bool condition, const char* op, const std::string& message) {
  if (!condition) throw Error(ErrorCode::kINVALID_ARGUMENT, std::string(op) + ": " + message);
}

/// The kernels' element types: bf16 and fp16.
inline void require_half_dtype(DataType dtype, const char* op) {
  if (dtype != DataType::kBF16 && dtype != DataType::kHALF)
    throw Error(ErrorCode::kDTYPE_MISMATCH, std::string(op) + ": dtype must be bf16 or f16, got " +
                                                std::string(dtype_name(dtype)));
}

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

/// Multiprocessor count of the current device (cached per device; grids are sized by it).
int multiprocessor_count();

}  // namespace bindery::cuda

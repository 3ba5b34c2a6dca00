#pragma once
// Kernel launches with programmatic dependent launch (PDL, sm_90): a kernel may start while the
// one before it on the stream drains, and waits (wait_for_producers) only where it first reads
// what that kernel wrote. A decode step is ~300 launches of which most are a few microseconds:
// without PDL each one pays the launch latency and the previous kernel's tail on an idle GPU;
// with it the GEMVs issue their first weight loads, which depend on nothing, during the norm,
// rotary or attention kernel before them.
//
// The contract, for every kernel launched through launch_kernel:
//  - every thread that reads a previous kernel's output, or writes memory a previous kernel may
//    still read, calls wait_for_producers() first, and every block calls it on every path (a
//    block that returns early still waits): a grid that finished without waiting would let the
//    kernel after it start before the kernel before it had finished;
//  - allow_dependents() may come anywhere; the dependent grid still waits for this one to
//    complete before it reads anything.
// Both are no-ops when the kernel was launched without the attribute (BINDERY_CUDA_PDL=0, or a
// device before sm_90).

#include <cuda_runtime.h>

#include <utility>

#include "runtime/cuda/cuda_check.h"

namespace bindery::cuda {

__device__ __forceinline__ void wait_for_producers() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void allow_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

/// Whether launch_kernel asks for programmatic dependent launch on the current device: compute
/// capability 9.0 or newer and BINDERY_CUDA_PDL not "0". Cached per device.
bool programmatic_launch_enabled();

/// kernel<<<grid, block, smem, stream>>>(args...), with programmatic stream serialisation when
/// programmatic_launch_enabled(); throws Error(kDEVICE) naming `name` if the launch fails.
template <typename... Params, typename... Args>
void launch_kernel(const char* name, void (*kernel)(Params...), dim3 grid, dim3 block,
                   size_t smem_bytes, cudaStream_t stream, Args&&... args) {
  cudaLaunchAttribute attribute{};
  attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute.val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem_bytes;
  config.stream = stream;
  config.attrs = &attribute;
  config.numAttrs = programmatic_launch_enabled() ? 1 : 0;
  check_cuda(cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...),
             std::string("launch of ") + name);
}

}  // namespace bindery::cuda

# The CUDA kernel layer (src/runtime/cuda/*.cu -> bindery_cuda_kernels), built whenever
# BINDERY_WITH_CUDA is on and an nvcc is found. Included from the top-level CMakeLists.txt right
# after the CUDA toolkit block. Kernels compile without a GPU (CI, the build machine): the
# default architecture is sm_90a (H100/H200), never "native", which would need a visible GPU.
# One architecture only, to keep CI's 2-core compile short; pass -DCMAKE_CUDA_ARCHITECTURES=...
# to build for another.
if(NOT BINDERY_WITH_CUDA)
  return()
endif()
include(CheckLanguage)
check_language(CUDA)
if(NOT CMAKE_CUDA_COMPILER)
  message(STATUS "bindery: no nvcc found: CUDA kernels (bindery_cuda_kernels) not built")
  return()
endif()
if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES OR CMAKE_CUDA_ARCHITECTURES STREQUAL "")
  set(CMAKE_CUDA_ARCHITECTURES 90a CACHE STRING "CUDA architectures of bindery's kernels")
endif()
enable_language(CUDA)
# C++17: CMake 3.25 knows no C++20 flag for nvcc, and the kernels need nothing newer.
set(CMAKE_CUDA_STANDARD 17)
set(CMAKE_CUDA_STANDARD_REQUIRED ON)
set(CMAKE_CUDA_EXTENSIONS OFF)

file(GLOB bindery_cuda_sources CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/src/runtime/cuda/*.cu)
add_library(bindery_cuda_kernels STATIC ${bindery_cuda_sources})
add_library(bindery::bindery_cuda_kernels ALIAS bindery_cuda_kernels)
target_include_directories(bindery_cuda_kernels PUBLIC ${PROJECT_SOURCE_DIR}/include
                                                       ${PROJECT_SOURCE_DIR}/src)
# cuBLAS: the MoE layer's prefill path (moe.cu) runs each expert's GEMMs through it.
target_link_libraries(bindery_cuda_kernels PUBLIC bindery_core CUDA::cudart CUDA::cublas)
# -lineinfo: profilers map SASS back to source at no run-time cost. No --use_fast_math: rotary's
# sincosf needs full range reduction and the norms/softmax use exact division; the kernels use
# the fast intrinsics (ex2.approx) explicitly where the tolerance allows.
target_compile_options(bindery_cuda_kernels PRIVATE
  $<$<COMPILE_LANGUAGE:CUDA>:-lineinfo --expt-relaxed-constexpr -Xcompiler=-Wall>)
set_target_properties(bindery_cuda_kernels PROPERTIES CUDA_SEPARABLE_COMPILATION OFF
                                                      POSITION_INDEPENDENT_CODE ON)
message(STATUS "bindery: CUDA kernels for architectures ${CMAKE_CUDA_ARCHITECTURES}")

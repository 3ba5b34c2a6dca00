// Weight-only int4 matmul in GPTQ's packing (kMATMUL_INT4), y = x · Wᵀ.
//
// Decode (m <= 8 rows, matmul_int4_gemv): the packed words are a quarter of bf16's bytes and
// are read once, so the kernel's time is their bytes over HBM bandwidth if the dequantization
// keeps up. What makes that hold:
// - A thread owns 4 output columns: one 16-byte load of qweight is one word (8 input rows) of
//   each, 32 weights. The col_lanes lanes of a warp that share a row read 64-256 contiguous
//   bytes; the warp's other lanes, and the block's 8 warps, each take a contiguous run of
//   word-rows (so a group's zeros and scales are loaded once per run, not per word), with U
//   loads in flight per thread before the first use.
// - A nibble becomes an exact f32 in one byte permute: (nibble | 0x4B000000) is 2^23 + q, and
//   subtracting 2^23 + zero gives q - zero exactly. Then one multiply by the scale (the value
//   the CPU reference computes, bit for bit) and one FMA per token: ~4.5 instructions per
//   weight at m = 1 with the per-word overhead, near the ~5 an H100 issues per int4 weight
//   that HBM delivers (an estimate, not a measurement). Each further token adds an FMA per
//   weight, so m = 8 is bound by issue, not memory (~2.5x the bytes' time): a tensor-core
//   variant (x as the mma's A operand, as gemv.cu does) is the next step there.
// - g_idx is read for every word (8 rows, two 16-byte loads from L1). When the 8 rows share a
//   group (every word unless act-order scatters them or group_size % 8 != 0) the word takes
//   the fast path; otherwise each row fetches its own group's zero and scale.
// - Columns per block (16, 32 or 64) shrink until the grid covers the SMs; the warps' partial
//   sums meet in shared memory and are added in a fixed order (deterministic results).
// Prefill (dequantize_int4): W is written dequantized ([out, in], bf16/f16) for a cuBLAS GEMM;
// each thread turns one word of 4 columns into 4 16-byte stores along W's rows.

#include <string>
#include <utility>

#include "runtime/cuda/cuda_check.h"
#include "runtime/cuda/device_util.cuh"
#include "runtime/cuda/launch.cuh"
#include "runtime/cuda/matmul_int4.h"

namespace bindery::cuda {
namespace {

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kMaxTileCols = 16 * 4;      // col_lanes <= 16, 4 columns each
constexpr uint32_t kMAGIC = 0x4B000000u;  // 2^23 as f32: kMAGIC | n is 2^23 + n for n < 2^23

enum class ScaleKind : int { kF32, kF16, kBF16 };

/// 2^23 + nibble j of a word, given lo = word & 0x0F0F0F0F and hi = (word >> 4) & 0x0F0F0F0F:
/// nibble 2b is byte b of lo, nibble 2b+1 byte b of hi; the permute puts it under 0x4B.
template <int J>
__device__ __forceinline__ float nibble_f32(uint32_t lo, uint32_t hi) {
  return __uint_as_float(__byte_perm(J & 1 ? hi : lo, kMAGIC, 0x7440 | (J >> 1)));
}

/// The group of an input row; one outside [0, groups) reads the nearest and raises the flag.
__device__ __forceinline__ int checked_group(int g, int groups, int* error_flag) {
  if (static_cast<unsigned>(g) < static_cast<unsigned>(groups)) return g;
  if (error_flag != nullptr) atomicOr(error_flag, kINT4_GROUP_ERROR);
  return g < 0 ? 0 : groups - 1;
}

/// 2^23 + zero (zero_offset included) of columns col..col+3 of group g, as f32.
__device__ __forceinline__ void load_zeros(const int32_t* __restrict__ qzeros, int out, int g,
                                           int col, float zero_offset, float (&z)[4]) {
  const uint32_t word =
      static_cast<uint32_t>(__ldg(qzeros + static_cast<int64_t>(g) * (out / 8) + col / 8)) >>
      (4 * (col & 7));
#pragma unroll
  for (int c = 0; c < 4; ++c)
    z[c] = __uint_as_float(kMAGIC | ((word >> (4 * c)) & 0xFu)) + zero_offset;
}

/// Scales of columns col..col+3 of group g, as f32 (col % 4 == 0: one 8- or 16-byte load).
__device__ __forceinline__ void load_scales(const void* __restrict__ scales, ScaleKind kind,
                                            int out, int g, int col, float (&s)[4]) {
  const int64_t at = static_cast<int64_t>(g) * out + col;
  if (kind == ScaleKind::kF32) {
    const float4 v = __ldg(reinterpret_cast<const float4*>(static_cast<const float*>(scales) + at));
    s[0] = v.x, s[1] = v.y, s[2] = v.z, s[3] = v.w;
    return;
  }
  const uint2 v = __ldg(reinterpret_cast<const uint2*>(static_cast<const uint16_t*>(scales) + at));
  if (kind == ScaleKind::kF16) {
    const fp16* h = reinterpret_cast<const fp16*>(&v);
#pragma unroll
    for (int c = 0; c < 4; ++c) s[c] = to_float(h[c]);
  } else {
    const bf16* h = reinterpret_cast<const bf16*>(&v);
#pragma unroll
    for (int c = 0; c < 4; ++c) s[c] = to_float(h[c]);
  }
}

/// Adds input row 8r + J of one word-row to acc[token][column], given its 4 columns' packed
/// nibbles (lo/hi, see nibble_f32), zeros (2^23 + zero) and scales.
template <typename T, int M, int J>
__device__ __forceinline__ void add_row(const uint32_t (&lo)[4], const uint32_t (&hi)[4],
                                        const float (&z)[4], const float (&s)[4],
                                        const uint4 (&xq)[M], float (&acc)[M][4]) {
  float w[4];
#pragma unroll
  for (int c = 0; c < 4; ++c) w[c] = (nibble_f32<J>(lo[c], hi[c]) - z[c]) * s[c];
#pragma unroll
  for (int t = 0; t < M; ++t) {
    const float xv = to_float(reinterpret_cast<const T*>(&xq[t])[J]);
#pragma unroll
    for (int c = 0; c < 4; ++c) acc[t][c] = fmaf(xv, w[c], acc[t][c]);
  }
}

/// The same with row 8r + J's own group (act-order, or a group boundary inside the word).
template <typename T, int M, int J>
__device__ __forceinline__ void add_row_own_group(const uint32_t (&lo)[4], const uint32_t (&hi)[4],
                                                  int group, const int32_t* __restrict__ qzeros,
                                                  const void* __restrict__ scales, ScaleKind kind,
                                                  int out, int groups, float zero_offset,
                                                  int* error_flag, int col, const uint4 (&xq)[M],
                                                  float (&acc)[M][4]) {
  const int g = checked_group(group, groups, error_flag);
  float z[4], s[4];
  load_zeros(qzeros, out, g, col, zero_offset, z);
  load_scales(scales, kind, out, g, col, s);
  add_row<T, M, J>(lo, hi, z, s, xq, acc);
}

/// add_row for rows J... of a word that lies in one group.
template <typename T, int M, int... J>
__device__ __forceinline__ void add_rows(std::integer_sequence<int, J...>, const uint32_t (&lo)[4],
                                         const uint32_t (&hi)[4], const float (&z)[4],
                                         const float (&s)[4], const uint4 (&xq)[M],
                                         float (&acc)[M][4]) {
  (add_row<T, M, J>(lo, hi, z, s, xq, acc), ...);
}

/// add_row_own_group for rows J... of a word whose rows are in groups rows_group[J].
template <typename T, int M, int... J>
__device__ __forceinline__ void add_rows_own_groups(
    std::integer_sequence<int, J...>, const uint32_t (&lo)[4], const uint32_t (&hi)[4],
    const int (&rows_group)[8], const int32_t* __restrict__ qzeros, const void* __restrict__ scales,
    ScaleKind kind, int out, int groups, float zero_offset, int* error_flag, int col,
    const uint4 (&xq)[M], float (&acc)[M][4]) {
  (add_row_own_group<T, M, J>(lo, hi, rows_group[J], qzeros, scales, kind, out, groups, zero_offset,
                              error_flag, col, xq, acc),
   ...);
}

/// Adds word-row r (input rows 8r..8r+7) of columns col..col+3 to acc[token][column].
/// cached_group, zf and sf keep the zeros and scales of the last group a whole word was in.
template <typename T, int M>
__device__ __forceinline__ void accumulate_word(
    const T* __restrict__ x, const int32_t* __restrict__ qzeros, const void* __restrict__ scales,
    ScaleKind kind, const int32_t* __restrict__ g_idx, int m, int in, int out, int groups,
    float zero_offset, int* error_flag, int col, int r, const uint4& packed, int& cached_group,
    float (&zf)[4], float (&sf)[4], float (&acc)[M][4]) {
  const int4 ga = __ldg(reinterpret_cast<const int4*>(g_idx + 8 * static_cast<int64_t>(r)));
  const int4 gb = __ldg(reinterpret_cast<const int4*>(g_idx + 8 * static_cast<int64_t>(r) + 4));
  uint4 xq[M];
#pragma unroll
  for (int t = 0; t < M; ++t)
    xq[t] = load_cached_if(x + static_cast<int64_t>(t < m ? t : 0) * in + 8 * r, t < m);
  const uint32_t words[4] = {packed.x, packed.y, packed.z, packed.w};
  uint32_t lo[4], hi[4];
#pragma unroll
  for (int c = 0; c < 4; ++c) {
    lo[c] = words[c] & 0x0F0F0F0Fu;
    hi[c] = (words[c] >> 4) & 0x0F0F0F0Fu;
  }
  const int g0 = ga.x;
  if (ga.y == g0 && ga.z == g0 && ga.w == g0 && gb.x == g0 && gb.y == g0 && gb.z == g0 &&
      gb.w == g0) {
    if (g0 != cached_group) {
      cached_group = g0;
      const int g = checked_group(g0, groups, error_flag);
      load_zeros(qzeros, out, g, col, zero_offset, zf);
      load_scales(scales, kind, out, g, col, sf);
    }
    add_rows<T, M>(std::make_integer_sequence<int, 8>{}, lo, hi, zf, sf, xq, acc);
    return;
  }
  const int rows_group[8] = {ga.x, ga.y, ga.z, ga.w, gb.x, gb.y, gb.z, gb.w};
  add_rows_own_groups<T, M>(std::make_integer_sequence<int, 8>{}, lo, hi, rows_group, qzeros,
                            scales, kind, out, groups, zero_offset, error_flag, col, xq, acc);
}

// M: tokens the kernel is unrolled for (m <= M; rows m..M-1 read zeros, results dropped).
// U: packed loads in flight per thread.
template <typename T, typename TOut, int M, int U>
__global__ void __launch_bounds__(kThreads)
    int4_gemv_kernel(const T* __restrict__ x, const int32_t* __restrict__ qweight,
                     const int32_t* __restrict__ qzeros, const void* __restrict__ scales,
                     ScaleKind kind, const int32_t* __restrict__ g_idx, TOut* __restrict__ y, int m,
                     int in, int out, int groups, float zero_offset, int col_lanes_log2,
                     int* error_flag) {
  __shared__ float partial[kWarps][M][kMaxTileCols];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int col_lanes = 1 << col_lanes_log2, row_lanes = 32 >> col_lanes_log2;
  const int cl = lane & (col_lanes - 1), rl = lane >> col_lanes_log2;
  const int tile_cols = 4 * col_lanes;
  // Columns past `out` read the last quad (valid memory) and drop their results.
  const int col = min(blockIdx.x * tile_cols + 4 * cl, out - 4);
  const int words = in / 8, slots = kWarps * row_lanes;
  const int chunk = (words + slots - 1) / slots;
  const int begin = min((warp * row_lanes + rl) * chunk, words);
  const int end = min(begin + chunk, words);

  float acc[M][4];
#pragma unroll
  for (int t = 0; t < M; ++t)
#pragma unroll
    for (int c = 0; c < 4; ++c) acc[t][c] = 0.f;
  int cached_group = -1;
  float zf[4] = {0.f, 0.f, 0.f, 0.f}, sf[4] = {0.f, 0.f, 0.f, 0.f};
  wait_for_producers();  // x comes from the kernel before
  allow_dependents();
  for (int r0 = begin; r0 < end; r0 += U) {
    uint4 packed[U];
#pragma unroll
    for (int u = 0; u < U; ++u)
      packed[u] = load_stream(qweight + static_cast<int64_t>(min(r0 + u, end - 1)) * out + col);
#pragma unroll
    for (int u = 0; u < U; ++u)
      if (r0 + u < end)
        accumulate_word<T, M>(x, qzeros, scales, kind, g_idx, m, in, out, groups, zero_offset,
                              error_flag, col, r0 + u, packed[u], cached_group, zf, sf, acc);
  }
  // The warp's row lanes (lanes cl, cl + col_lanes, ...) add up; then the warps, in order.
#pragma unroll
  for (int t = 0; t < M; ++t)
#pragma unroll
    for (int c = 0; c < 4; ++c)
      for (int offset = col_lanes; offset < 32; offset <<= 1)
        acc[t][c] += __shfl_xor_sync(0xFFFFFFFFu, acc[t][c], offset);
  if (rl == 0)
#pragma unroll
    for (int t = 0; t < M; ++t)
#pragma unroll
      for (int c = 0; c < 4; ++c) partial[warp][t][4 * cl + c] = acc[t][c];
  __syncthreads();
  for (int i = threadIdx.x; i < M * tile_cols; i += kThreads) {
    const int t = i / tile_cols, cc = i % tile_cols;
    const int o = blockIdx.x * tile_cols + cc;
    if (t >= m || o >= out) continue;
    float sum = 0.f;
#pragma unroll
    for (int wi = 0; wi < kWarps; ++wi) sum += partial[wi][t][cc];
    y[static_cast<int64_t>(t) * out + o] = from_float<TOut>(sum);
  }
}

// One thread per (word-row r, quad of columns): 32 weights, written as 4 rows of 8.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    int4_dequant_kernel(const int32_t* __restrict__ qweight, const int32_t* __restrict__ qzeros,
                        const void* __restrict__ scales, ScaleKind kind,
                        const int32_t* __restrict__ g_idx, T* __restrict__ w, int in, int out,
                        int groups, float zero_offset, int* error_flag) {
  wait_for_producers();  // the GEMM before may still read the previous layer's W
  allow_dependents();
  const int r = blockIdx.x * blockDim.x + threadIdx.x;
  const int col = 4 * (blockIdx.y * blockDim.y + threadIdx.y);
  if (r >= in / 8 || col >= out) return;
  const uint4 packed = load_stream(qweight + static_cast<int64_t>(r) * out + col);
  const uint32_t words[4] = {packed.x, packed.y, packed.z, packed.w};
  const int4 ga = __ldg(reinterpret_cast<const int4*>(g_idx + 8 * static_cast<int64_t>(r)));
  const int4 gb = __ldg(reinterpret_cast<const int4*>(g_idx + 8 * static_cast<int64_t>(r) + 4));
  const int rows_group[8] = {ga.x, ga.y, ga.z, ga.w, gb.x, gb.y, gb.z, gb.w};
  float v[4][8];
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    const int g = checked_group(rows_group[j], groups, error_flag);
    float z[4], s[4];
    load_zeros(qzeros, out, g, col, zero_offset, z);
    load_scales(scales, kind, out, g, col, s);
#pragma unroll
    for (int c = 0; c < 4; ++c)
      v[c][j] = (__uint_as_float(kMAGIC | ((words[c] >> (4 * j)) & 0xFu)) - z[c]) * s[c];
  }
#pragma unroll
  for (int c = 0; c < 4; ++c)
    *reinterpret_cast<uint4*>(w + static_cast<int64_t>(col + c) * in + 8 * r) = pack8<T>(v[c]);
}

ScaleKind scale_kind(DataType t, const char* op) {
  switch (t) {
    case DataType::kFLOAT: return ScaleKind::kF32;
    case DataType::kHALF: return ScaleKind::kF16;
    case DataType::kBF16: return ScaleKind::kBF16;
    default: break;
  }
  throw Error(
      ErrorCode::kDTYPE_MISMATCH,
      std::string(op) + ": scales must be f32, f16 or bf16, got " + std::string(dtype_name(t)));
}

void check_weights(const Int4Weights& w, const char* op) {
  require(w.in_features >= 8 && w.in_features % 8 == 0 && w.out_features >= 8 &&
              w.out_features % 8 == 0,
          op,
          "in_features and out_features must be positive multiples of 8, got in " +
              std::to_string(w.in_features) + ", out " + std::to_string(w.out_features));
  require(w.groups >= 1 && w.groups <= w.in_features, op,
          "groups must be in 1..in_features, got " + std::to_string(w.groups));
  require(w.zero_offset == 0 || w.zero_offset == 1, op,
          "zero_offset must be 0 or 1, got " + std::to_string(w.zero_offset));
  require(w.qweight && w.qzeros && w.scales && w.g_idx, op,
          "qweight, qzeros, scales and g_idx must be non-null");
  const uintptr_t scale_align = w.scale_dtype == DataType::kFLOAT ? 16 : 8;
  require(aligned16(w.qweight) && aligned16(w.g_idx) &&
              (reinterpret_cast<uintptr_t>(w.scales) % scale_align) == 0 &&
              (reinterpret_cast<uintptr_t>(w.qzeros) % 4) == 0,
          op,
          "qweight and g_idx must be 16-byte aligned, scales " + std::to_string(scale_align) +
              "-byte, qzeros 4-byte");
}

/// Columns per block: 64 (256 contiguous bytes per packed row) unless that leaves SMs idle,
/// then 32 or 16.
int pick_col_lanes_log2(int out) {
  const int sms = multiprocessor_count();
  int log2 = 4;
  while (log2 > 2 && (out + (4 << log2) - 1) / (4 << log2) < sms) --log2;
  return log2;
}

template <typename T, typename TOut, int M>
void launch_gemv(const void* x, const Int4Weights& w, void* y, int m, int* error_flag,
                 cudaStream_t stream) {
  constexpr int kU = M <= 2 ? 8 : 4;  // fewer accumulators leave room for more loads in flight
  const int log2 = pick_col_lanes_log2(w.out_features);
  const int tile_cols = 4 << log2;
  const int blocks = (w.out_features + tile_cols - 1) / tile_cols;
  launch_kernel("int4_gemv_kernel", int4_gemv_kernel<T, TOut, M, kU>, blocks, kThreads, 0, stream,
                static_cast<const T*>(x), w.qweight, w.qzeros, w.scales,
                scale_kind(w.scale_dtype, "matmul_int4_gemv"), w.g_idx, static_cast<TOut*>(y), m,
                w.in_features, w.out_features, w.groups, static_cast<float>(w.zero_offset), log2,
                error_flag);
}

template <typename T, typename TOut>
void dispatch_rows(const void* x, const Int4Weights& w, void* y, int m, int* error_flag,
                   cudaStream_t stream) {
  if (m == 1)
    launch_gemv<T, TOut, 1>(x, w, y, m, error_flag, stream);
  else if (m == 2)
    launch_gemv<T, TOut, 2>(x, w, y, m, error_flag, stream);
  else if (m <= 4)
    launch_gemv<T, TOut, 4>(x, w, y, m, error_flag, stream);
  else
    launch_gemv<T, TOut, 8>(x, w, y, m, error_flag, stream);
}

}  // namespace

void matmul_int4_gemv(DataType dtype, const void* x, const Int4Weights& w, DataType y_dtype,
                      void* y, int m, int* error_flag, cudaStream_t stream) {
  const char* op = "matmul_int4_gemv";
  require_half_dtype(dtype, op);
  if (y_dtype != dtype && y_dtype != DataType::kFLOAT)
    throw Error(ErrorCode::kDTYPE_MISMATCH, std::string(op) + ": y dtype must be " +
                                                std::string(dtype_name(dtype)) + " or f32, got " +
                                                std::string(dtype_name(y_dtype)));
  scale_kind(w.scale_dtype, op);
  require(m >= 1 && m <= 8, op, "m (rows of x) must be in 1..8, got " + std::to_string(m));
  check_weights(w, op);
  require(x != nullptr && y != nullptr, op, "x and y must be non-null");
  require(aligned16(x), op, "x must be 16-byte aligned");
  const bool f32_out = y_dtype == DataType::kFLOAT;
  if (dtype == DataType::kBF16) {
    if (f32_out)
      dispatch_rows<bf16, float>(x, w, y, m, error_flag, stream);
    else
      dispatch_rows<bf16, bf16>(x, w, y, m, error_flag, stream);
  } else {
    if (f32_out)
      dispatch_rows<fp16, float>(x, w, y, m, error_flag, stream);
    else
      dispatch_rows<fp16, fp16>(x, w, y, m, error_flag, stream);
  }
}

void dequantize_int4(DataType dtype, const Int4Weights& w, void* out, int* error_flag,
                     cudaStream_t stream) {
  const char* op = "dequantize_int4";
  require_half_dtype(dtype, op);
  const ScaleKind kind = scale_kind(w.scale_dtype, op);
  check_weights(w, op);
  require(out != nullptr && aligned16(out), op, "out must be non-null and 16-byte aligned");
  const dim3 block(32, kThreads / 32);
  const dim3 grid((w.in_features / 8 + block.x - 1) / block.x,
                  (w.out_features / 4 + block.y - 1) / block.y);
  const float zero_offset = static_cast<float>(w.zero_offset);
  if (dtype == DataType::kBF16)
    launch_kernel("int4_dequant_kernel", int4_dequant_kernel<bf16>, grid, block, 0, stream,
                  w.qweight, w.qzeros, w.scales, kind, w.g_idx, static_cast<bf16*>(out),
                  w.in_features, w.out_features, w.groups, zero_offset, error_flag);
  else
    launch_kernel("int4_dequant_kernel", int4_dequant_kernel<fp16>, grid, block, 0, stream,
                  w.qweight, w.qzeros, w.scales, kind, w.g_idx, static_cast<fp16*>(out),
                  w.in_features, w.out_features, w.groups, zero_offset, error_flag);
}

}  // namespace bindery::cuda

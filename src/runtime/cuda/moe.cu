// Sparse mixture of experts (kMOE, Mixtral) on the GPU: routing, the chosen experts' gated
// MLPs, and the weighted sum of their outputs.
//
// Routing: one thread per token computes the f32 softmax of its router logits and picks the
// top_k probabilities with the very steps of libstdc++'s std::nth_element / partial_sort /
// sort, replayed on (probability, index) pairs with the CPU kernel's comparator. That is how
// torch.topk chooses on the CPU, so tied probabilities (a zero router, equal bf16 logits) route
// to the experts transformers and the CPU kernel pick, not merely to some valid top k.
//
// Grouping: one block sorts the (token, choice) pairs by expert on the device (a counting sort,
// pairs in increasing order within an expert): each expert's rows of the intermediate buffers
// are consecutive, and a list of the chosen experts says which ones to run.
//
// Decode (kGEMV): the experts' matrix-vector products run on the decode GEMV's tensor-core loop
// (gemv_common.cuh) over a grid of (row blocks, chosen-expert slots, chunks of 8 rows). A block
// reads its expert from the device-side list and streams that expert's rows once for up to 8 of
// its tokens (the mma's 8 token rows); only the chosen experts' weights are read, and nothing
// waits for the host, so a CUDA graph captures the whole layer. gate|up -> silu(gate)·up
// (activation.cu's silu_mul) -> down, then a combine kernel adds every token's weighted expert
// outputs in increasing expert order. A row's arithmetic does not depend on the rows beside it,
// so a token gets the same bits alone or in a batch.
//
// Prefill (kGEMM): the experts' row counts go to the host (one synchronisation), each expert's
// tokens are gathered into its consecutive rows, and each chosen expert runs as two cuBLAS GEMMs
// over all its tokens; the same silu_mul and combine kernels finish the layer.
//
// Rounding follows transformers' MixtralExperts in bf16/f16: every projection's output, silu and
// silu·up are rounded to the data type, each expert's output times its f32 weight is rounded,
// and index_add_ rounds the running sum after each expert.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <type_traits>
#include <vector>

#include "runtime/cuda/cuda_check.h"
#include "runtime/cuda/device_util.cuh"
#include "runtime/cuda/gemv_common.cuh"
#include "runtime/cuda/kernels.h"
#include "runtime/cuda/launch.cuh"
#include "runtime/cuda/moe.h"

namespace bindery::cuda {
namespace {

using namespace gemv_detail;

// ---- top-k selection, step for step as libstdc++ (bits/stl_algo.h, bits/stl_heap.h) ----

struct Entry {
  float value;
  int index;
};

// The CPU kernel's order (and torch's topk queue): NaN above every number, then larger first.
__host__ __device__ inline bool larger(const Entry& a, const Entry& b) {
  const bool a_nan = a.value != a.value, b_nan = b.value != b.value;
  return (a_nan && !b_nan) || a.value > b.value;
}
__host__ __device__ inline void swap_entries(Entry* a, Entry* b) {
  const Entry t = *a;
  *a = *b;
  *b = t;
}
__host__ __device__ inline int floor_log2(int n) {
  int l = 0;
  while (n >>= 1) ++l;
  return l;
}

// std::__push_heap / __adjust_heap / __make_heap / __pop_heap / __sort_heap.
__host__ __device__ inline void push_heap(Entry* first, int hole, int top, Entry value) {
  int parent = (hole - 1) / 2;
  while (hole > top && larger(first[parent], value)) {
    first[hole] = first[parent];
    hole = parent;
    parent = (hole - 1) / 2;
  }
  first[hole] = value;
}
__host__ __device__ inline void adjust_heap(Entry* first, int hole, int len, Entry value) {
  const int top = hole;
  int child = hole;
  while (child < (len - 1) / 2) {
    child = 2 * (child + 1);
    if (larger(first[child], first[child - 1])) --child;
    first[hole] = first[child];
    hole = child;
  }
  if ((len & 1) == 0 && child == (len - 2) / 2) {
    child = 2 * (child + 1);
    first[hole] = first[child - 1];
    hole = child - 1;
  }
  push_heap(first, hole, top, value);
}
__host__ __device__ inline void make_heap(Entry* first, Entry* last) {
  const int len = static_cast<int>(last - first);
  if (len < 2) return;
  for (int parent = (len - 2) / 2;; --parent) {
    adjust_heap(first, parent, len, first[parent]);
    if (parent == 0) return;
  }
}
__host__ __device__ inline void pop_heap(Entry* first, Entry* last, Entry* result) {
  const Entry value = *result;
  *result = *first;
  adjust_heap(first, 0, static_cast<int>(last - first), value);
}
// std::__heap_select, then std::__sort_heap: std::partial_sort.
__host__ __device__ inline void heap_select(Entry* first, Entry* middle, Entry* last) {
  make_heap(first, middle);
  for (Entry* i = middle; i < last; ++i)
    if (larger(*i, *first)) pop_heap(first, middle, i);
}
__host__ __device__ inline void partial_sort(Entry* first, Entry* middle, Entry* last) {
  heap_select(first, middle, last);
  while (middle - first > 1) {
    --middle;
    pop_heap(first, middle, middle);
  }
}

// std::__move_median_to_first, __unguarded_partition(_pivot).
__host__ __device__ inline void move_median_to_first(Entry* result, Entry* a, Entry* b, Entry* c) {
  if (larger(*a, *b)) {
    if (larger(*b, *c))
      swap_entries(result, b);
    else if (larger(*a, *c))
      swap_entries(result, c);
    else
      swap_entries(result, a);
  } else if (larger(*a, *c)) {
    swap_entries(result, a);
  } else if (larger(*b, *c)) {
    swap_entries(result, c);
  } else {
    swap_entries(result, b);
  }
}
__host__ __device__ inline Entry* partition_pivot(Entry* first, Entry* last) {
  move_median_to_first(first, first + 1, first + (last - first) / 2, last - 1);
  const Entry* pivot = first;
  Entry* lo = first + 1;
  while (true) {
    while (larger(*lo, *pivot)) ++lo;
    --last;
    while (larger(*pivot, *last)) --last;
    if (!(lo < last)) return lo;
    swap_entries(lo, last);
    ++lo;
  }
}

// std::__unguarded_linear_insert, __insertion_sort, __final_insertion_sort.
__host__ __device__ inline void linear_insert(Entry* last) {
  const Entry value = *last;
  Entry* next = last - 1;
  while (larger(value, *next)) {
    *last = *next;
    last = next;
    --next;
  }
  *last = value;
}
__host__ __device__ inline void insertion_sort(Entry* first, Entry* last) {
  if (first == last) return;
  for (Entry* i = first + 1; i != last; ++i) {
    if (larger(*i, *first)) {
      const Entry value = *i;
      for (Entry* j = i; j != first; --j) *j = *(j - 1);
      *first = value;
    } else {
      linear_insert(i);
    }
  }
}

constexpr int kSortThreshold = 16;  // libstdc++'s _S_threshold

// std::sort: introsort down to runs of 16, then one insertion sort. The recursion on the
// upper part becomes a stack: the parts are disjoint, so the order they are sorted in does
// not change the result.
__host__ __device__ inline void sort_entries(Entry* first, Entry* last) {
  if (first == last) return;
  struct Range {
    Entry *first, *last;
    int depth;
  };
  Range stack[2 * 8 + 2];  // depth <= 2 * log2(kMoeMaxExperts) ranges
  int top = 0;
  stack[top++] = {first, last, 2 * floor_log2(static_cast<int>(last - first))};
  while (top > 0) {
    Range r = stack[--top];
    while (r.last - r.first > kSortThreshold) {
      if (r.depth == 0) {
        partial_sort(r.first, r.last, r.last);
        break;
      }
      --r.depth;
      Entry* cut = partition_pivot(r.first, r.last);
      stack[top++] = {cut, r.last, r.depth};
      r.last = cut;
    }
  }
  if (last - first > kSortThreshold) {
    insertion_sort(first, first + kSortThreshold);
    for (Entry* i = first + kSortThreshold; i != last; ++i) linear_insert(i);
  } else {
    insertion_sort(first, last);
  }
}

// std::nth_element (__introselect).
__host__ __device__ inline void nth_element(Entry* first, Entry* nth, Entry* last) {
  if (first == last || nth == last) return;
  int depth = 2 * floor_log2(static_cast<int>(last - first));
  while (last - first > 3) {
    if (depth == 0) {
      heap_select(first, nth + 1, last);
      swap_entries(first, nth);
      return;
    }
    --depth;
    Entry* cut = partition_pivot(first, last);
    if (cut <= nth)
      first = cut;
    else
      last = cut;
  }
  insertion_sort(first, last);
}

// One token's routing, as cpu::detail::moe_route: softmax with f32 exponentials summed in
// order in double, then torch's topk_impl_loop (a partial sort when k is small against the
// row, else nth_element and a sort of the k - 1 entries before the k-th).
template <typename L>
__host__ __device__ inline void route_token(const L* logits, int e, int k, bool normalize,
                                            Entry* queue, int32_t* experts, float* weights) {
  float m = -INFINITY;
  for (int j = 0; j < e; ++j) {
    const float l = static_cast<float>(logits[j]);
    m = m < l ? l : m;  // std::max(m, l)
  }
  double sum = 0.0;
  for (int j = 0; j < e; ++j) {
    // exp in double rounded once to f32: the correctly rounded f32 exponential (almost always),
    // what glibc's expf gives the CPU kernel.
    queue[j] = {static_cast<float>(exp(static_cast<double>(static_cast<float>(logits[j]) - m))), j};
    sum += queue[j].value;
  }
  const auto s = static_cast<float>(sum);
  for (int j = 0; j < e; ++j) queue[j].value /= s;
  if (k * 64 <= e) {
    partial_sort(queue, queue + k, queue + e);
  } else {
    nth_element(queue, queue + (k - 1), queue + e);
    sort_entries(queue, queue + (k - 1));
  }
  float total = 0.f;
  for (int i = 0; i < k; ++i) {
    experts[i] = queue[i].index;
    weights[i] = queue[i].value;
    total += queue[i].value;
  }
  if (normalize)
    for (int i = 0; i < k; ++i) weights[i] /= total;
}

constexpr int kRouteThreads = 64;

template <typename L>
__global__ void __launch_bounds__(kRouteThreads)
    moe_route_kernel(const L* __restrict__ logits, int tokens, int e, int k, bool normalize,
                     int32_t* __restrict__ experts, float* __restrict__ weights) {
  wait_for_producers();
  allow_dependents();
  const int t = blockIdx.x * kRouteThreads + threadIdx.x;
  if (t >= tokens) return;
  Entry queue[kMoeMaxExperts];
  route_token(logits + static_cast<int64_t>(t) * e, e, k, normalize, queue,
              experts + static_cast<int64_t>(t) * k, weights + static_cast<int64_t>(t) * k);
}

// ---- grouping the (token, choice) pairs by expert ----

constexpr int kGroupThreads = kMoeMaxExperts;  // one thread per expert

// Exclusive prefix sum of v over the block (kGroupThreads threads); *total gets the sum.
__device__ __forceinline__ int block_exclusive_sum(int v, int* total) {
  __shared__ int warp_sums[kGroupThreads / 32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  int inclusive = v;
  for (int d = 1; d < 32; d <<= 1) {
    const int up = __shfl_up_sync(0xffffffffu, inclusive, d);
    if (lane >= d) inclusive += up;
  }
  if (lane == 31) warp_sums[warp] = inclusive;
  __syncthreads();
  int before = 0, all = 0;
  for (int w = 0; w < kGroupThreads / 32; ++w) {
    before += w < warp ? warp_sums[w] : 0;
    all += warp_sums[w];
  }
  __syncthreads();  // warp_sums is reused by the next call
  *total = all;
  return before + inclusive - v;
}

// The pairs p = t * top_k + i (token t's i-th choice) grouped by expert: expert e's pairs, in
// increasing p, are order[offsets[e] .. offsets[e + 1]), and row_of[p] is p's place there;
// slots[j] is the j-th expert (increasing) that some pair chose, -1 past the last. One block,
// thread e counting expert e's pairs over tiles of the ids in shared memory.
__global__ void __launch_bounds__(kGroupThreads)
    moe_group_kernel(const int32_t* __restrict__ experts, int pairs, int num_experts,
                     int32_t* __restrict__ offsets, int32_t* __restrict__ order,
                     int32_t* __restrict__ row_of, int32_t* __restrict__ slots) {
  __shared__ int32_t tile[kGroupThreads];
  wait_for_producers();
  allow_dependents();
  const int e = threadIdx.x;
  // f(p) for every pair p of this thread's expert, in increasing p.
  const auto for_mine = [&](auto f) {
    for (int base = 0; base < pairs; base += kGroupThreads) {
      __syncthreads();
      if (base + e < pairs) tile[e] = experts[base + e];
      __syncthreads();
      const int n = min(kGroupThreads, pairs - base);
      for (int i = 0; i < n; ++i)
        if (tile[i] == e) f(base + i);
    }
  };
  int count = 0;
  for_mine([&](int) { ++count; });
  int total = 0, used = 0;
  const int first = block_exclusive_sum(count, &total);
  const int slot = block_exclusive_sum(count > 0 ? 1 : 0, &used);
  if (e < num_experts) offsets[e] = first;
  if (e == 0) offsets[num_experts] = total;
  if (count > 0) slots[slot] = e;
  if (e >= used && e < num_experts) slots[e] = -1;
  int r = first;
  for_mine([&](int p) {
    order[r] = p;
    row_of[p] = r++;
  });
}

// ---- the experts' matrix-vector products (kGEMV) ----

// y[r, 0:n] = x[xr, 0:k] · W_e[0:n, 0:k]ᵀ for the rows r of expert e = slots[blockIdx.y]
// (offsets[e] .. offsets[e + 1]), where W_e is rows [e*n, (e+1)*n) of w and xr is
// x_order[r] / x_div, or r when x_order is null. Block (x, j, z) covers the rows of gemv's
// block x for the chunks z, z + gridDim.z, ... of 8 of its expert's rows.
template <typename T>
__global__ void __launch_bounds__(kMaxWarps * 32)
    expert_gemv_kernel(const T* __restrict__ x, const int32_t* __restrict__ x_order, int x_div,
                       const T* __restrict__ w, const int32_t* __restrict__ slots,
                       const int32_t* __restrict__ offsets, T* __restrict__ y, int n, int k,
                       int k_warps) {
  const WarpTile tile = warp_tile(k_warps, blockIdx.x);
  // Rows past n read row n-1 (valid memory, result dropped), as in gemv.
  const int row = min(tile.row0 + tile.g, n - 1);
  wait_for_producers();  // the grouping and x come from the kernels before
  allow_dependents();
  const int expert = slots[blockIdx.y];
  if (expert < 0) return;  // fewer experts chosen than slots
  const int first = offsets[expert], rows = offsets[expert + 1] - first;
  const T* wrow = w + (static_cast<int64_t>(expert) * n + max(row, 0)) * k;
  for (int c = blockIdx.z * kMaxTokens; c < rows; c += gridDim.z * kMaxTokens) {
    const int m = min(kMaxTokens, rows - c);
    const bool has_token = tile.g < m;
    const int r = first + c + (has_token ? tile.g : 0);
    const T* xrow = x + static_cast<int64_t>(x_order != nullptr ? x_order[r] / x_div : r) * k;
    float acc[4] = {0.f, 0.f, 0.f, 0.f};
    if (tile.row0 < n) accumulate<T>(xrow, has_token, wrow, k, tile.t, tile.kw, k_warps, acc);
    reduce_block(acc, tile, m, n, k_warps, blockIdx.x, [&](int token, int out_row, float sum) {
      y[static_cast<int64_t>(first + c + token) * n + out_row] = from_float<T>(sum);
    });
    __syncthreads();  // the partials are rewritten next
  }
}

// ---- gather (kGEMM) and combine ----

// f(row, chunk) for every 16-byte chunk (8 elements) of `rows` rows of `hidden` elements, over
// a grid-stride loop.
template <typename F>
__device__ __forceinline__ void for_each_chunk(int rows, int hidden, F f) {
  const int chunks = hidden / 8;
  const int64_t total = static_cast<int64_t>(rows) * chunks;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    f(i / chunks, static_cast<int>(i % chunks));
}

// xs[r, :] = x[order[r] / top_k, :]: the tokens of each expert in consecutive rows.
template <typename T>
__global__ void moe_gather_kernel(const T* __restrict__ x, const int32_t* __restrict__ order,
                                  int top_k, T* __restrict__ xs, int rows, int hidden) {
  wait_for_producers();
  allow_dependents();
  for_each_chunk(rows, hidden, [&](int64_t r, int c) {
    const int64_t token = order[r] / top_k;
    reinterpret_cast<uint4*>(xs + r * hidden)[c] = load_cached(x + token * hidden + c * 8);
  });
}

// y[t, :] = the sum, in increasing expert order, of round(out[row_of[p], :] * weights[p]) over
// the token's pairs p = t * top_k + i, rounded after each addition.
template <typename T>
__global__ void moe_combine_kernel(const T* __restrict__ out, const int32_t* __restrict__ experts,
                                   const float* __restrict__ weights,
                                   const int32_t* __restrict__ row_of, T* __restrict__ y,
                                   int tokens, int top_k, int hidden) {
  wait_for_producers();
  allow_dependents();
  for_each_chunk(tokens, hidden, [&](int64_t t, int c) {
    const int32_t* chosen = experts + t * top_k;
    float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    int previous = -1;
    for (int step = 0; step < top_k; ++step) {
      int next = -1;  // the choice with the smallest expert above `previous`
      for (int j = 0; j < top_k; ++j)
        if (chosen[j] > previous && (next < 0 || chosen[j] < chosen[next])) next = j;
      previous = chosen[next];
      const int64_t p = t * top_k + next;
      const float gain = weights[p];
      float v[8];
      unpack8<T>(load_cached(out + static_cast<int64_t>(row_of[p]) * hidden + c * 8), v);
#pragma unroll
      for (int j = 0; j < 8; ++j) acc[j] = round_to<T>(acc[j] + round_to<T>(v[j] * gain));
    }
    reinterpret_cast<uint4*>(y + t * hidden)[c] = pack8<T>(acc);
  });
}

constexpr int kThreads = 256;

int stream_blocks(int64_t vectors) {
  const int64_t want = (vectors + kThreads - 1) / kThreads;
  return static_cast<int>(std::clamp<int64_t>(want, 1, 8LL * multiprocessor_count()));
}

// ---- host side ----

size_t align256(size_t bytes) { return (bytes + 255) / 256 * 256; }

// The workspace: the routing and its grouping by expert, then the rows (grouped by expert) of
// gate|up, silu·up and the experts' outputs, then (kGEMM) the gathered inputs.
struct Layout {
  size_t experts = 0, weights = 0, offsets = 0, order = 0, row_of = 0, slots = 0, gate_up = 0,
         act = 0, out = 0, xs = 0, total = 0;
};
Layout layout(DataType dtype, const MoeShape& s, MoePath path) {
  const size_t pairs = static_cast<size_t>(s.tokens) * s.top_k;
  const size_t es = static_cast<size_t>(dtype_bytes(dtype, 1)), ids = sizeof(int32_t);
  Layout l;
  if (pairs == 0) return l;  // nothing to route
  size_t at = 0;
  const auto take = [&](size_t bytes) {
    const size_t here = at;
    at += align256(bytes);
    return here;
  };
  l.experts = take(pairs * ids);
  l.weights = take(pairs * sizeof(float));
  l.offsets = take((s.num_experts + 1) * ids);
  l.order = take(pairs * ids);
  l.row_of = take(pairs * ids);
  l.slots = take(s.num_experts * ids);
  l.gate_up = take(pairs * 2 * s.ffn * es);
  l.act = take(pairs * s.ffn * es);
  l.out = take(pairs * s.hidden * es);
  if (path == MoePath::kGEMM) l.xs = take(pairs * s.hidden * es);
  l.total = at;
  return l;
}

MoePath resolve(MoePath path, const MoeShape& s) {
  if (path != MoePath::kAUTO) return path;
  return static_cast<int64_t>(s.tokens) * s.top_k <= kMoeGemvMaxPairs ? MoePath::kGEMV
                                                                      : MoePath::kGEMM;
}

void check_shape(DataType dtype, const MoeShape& s) {
  require_half_dtype(dtype, "moe");
  require(s.num_experts >= 1 && s.num_experts <= kMoeMaxExperts && s.top_k >= 1 &&
              s.top_k <= s.num_experts,
          "moe",
          "need 1 <= top_k <= experts <= " + std::to_string(kMoeMaxExperts) + ", got experts " +
              std::to_string(s.num_experts) + ", top_k " + std::to_string(s.top_k));
  require(s.tokens >= 0 && s.hidden >= 8 && s.hidden % 8 == 0 && s.ffn >= 8 && s.ffn % 8 == 0,
          "moe",
          "need tokens >= 0 and hidden and ffn positive multiples of 8, got tokens " +
              std::to_string(s.tokens) + ", hidden " + std::to_string(s.hidden) + ", ffn " +
              std::to_string(s.ffn));
  require(static_cast<int64_t>(s.tokens) * s.top_k * 2 <= INT32_MAX &&
              static_cast<int64_t>(s.num_experts) * 2 * s.ffn <= INT32_MAX,
          "moe", "too many tokens or expert rows for 32-bit row indices");
}

template <typename L>
void launch_route(const void* logits, int tokens, int e, int k, bool normalize, int32_t* experts,
                  float* weights, cudaStream_t stream) {
  launch_kernel("moe_route_kernel", moe_route_kernel<L>,
                (tokens + kRouteThreads - 1) / kRouteThreads, kRouteThreads, 0, stream,
                static_cast<const L*>(logits), tokens, e, k, normalize, experts, weights);
}

// Expert e's rows of y = x · W_eᵀ for every chosen expert e (see expert_gemv_kernel), the
// block grid of gemv over n, one slot per expert that may be chosen (at most `pairs`), and as
// many chunks of 8 rows as an expert holds on average (the blocks loop over more).
template <typename T>
void launch_expert_gemv(const T* x, const int32_t* x_order, int x_div, const T* w,
                        const int32_t* slots, const int32_t* offsets, const MoeShape& s, T* y,
                        int n, int k, cudaStream_t stream) {
  const int k_warps = pick_k_warps(n, k);
  const LaunchShape shape = launch_shape(n, k_warps);
  const int pairs = s.tokens * s.top_k, experts = std::min(s.num_experts, pairs);
  const int expected = (pairs + experts * kMaxTokens - 1) / (experts * kMaxTokens);
  const int chunks = std::clamp(expected, 1, (s.tokens + kMaxTokens - 1) / kMaxTokens);
  launch_kernel("expert_gemv_kernel", expert_gemv_kernel<T>,
                dim3(shape.blocks, experts, std::min(chunks, 65535)), shape.threads, 0, stream, x,
                x_order, x_div, w, slots, offsets, y, n, k, k_warps);
}

template <typename T>
void run_moe(const MoeShape& s, const T* x, const T* logits, const T* gate_up, const T* down, T* y,
             std::byte* ws, const Layout& l, MoePath path, cublasHandle_t cublas,
             cudaStream_t stream) {
  const DataType dtype = std::is_same_v<T, bf16> ? DataType::kBF16 : DataType::kHALF;
  const int pairs = s.tokens * s.top_k, h = s.hidden, f = s.ffn;
  const auto at = [&](size_t offset) { return reinterpret_cast<int32_t*>(ws + offset); };
  int32_t *experts = at(l.experts), *offsets = at(l.offsets), *order = at(l.order),
          *row_of = at(l.row_of), *slots = at(l.slots);
  auto* weights = reinterpret_cast<float*>(ws + l.weights);
  auto* gu = reinterpret_cast<T*>(ws + l.gate_up);
  auto* act = reinterpret_cast<T*>(ws + l.act);
  auto* out = reinterpret_cast<T*>(ws + l.out);
  if (path == MoePath::kGEMM) {  // refused before anything is queued
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    check_cuda(cudaStreamIsCapturing(stream, &capture), "moe");
    require(capture == cudaStreamCaptureStatusNone, "moe",
            "the kGEMM path synchronises its stream, which is being captured: use kGEMV");
    require(cublas != nullptr, "moe", "the kGEMM path needs a cuBLAS handle");
  }
  launch_route<T>(logits, s.tokens, s.num_experts, s.top_k, s.normalize_top_k, experts, weights,
                  stream);
  launch_kernel("moe_group_kernel", moe_group_kernel, 1, kGroupThreads, 0, stream,
                static_cast<const int32_t*>(experts), pairs, s.num_experts, offsets, order, row_of,
                slots);
  if (path == MoePath::kGEMV) {
    launch_expert_gemv<T>(x, order, s.top_k, gate_up, slots, offsets, s, gu, 2 * f, h, stream);
    silu_mul(dtype, gu, act, pairs, f, stream);
    launch_expert_gemv<T>(act, nullptr, 1, down, slots, offsets, s, out, h, f, stream);
  } else {
    std::vector<int32_t> first(static_cast<size_t>(s.num_experts) + 1);
    check_cuda(cudaMemcpyAsync(first.data(), offsets, first.size() * sizeof(int32_t),
                               cudaMemcpyDeviceToHost, stream),
               "moe: copying the expert groups to the host");
    check_cuda(cudaStreamSynchronize(stream), "moe: routing");
    auto* xs = reinterpret_cast<T*>(ws + l.xs);
    launch_kernel("moe_gather_kernel", moe_gather_kernel<T>,
                  stream_blocks(static_cast<int64_t>(pairs) * (h / 8)), kThreads, 0, stream, x,
                  static_cast<const int32_t*>(order), s.top_k, xs, pairs, h);
    const cudaDataType_t ab = dtype == DataType::kBF16 ? CUDA_R_16BF : CUDA_R_16F;
    const float alpha = 1.f, beta = 0.f;
    // Row-major out[c, n] = in[c, k] · W[n, k]ᵀ is column-major outᵀ = W · inᵀ.
    const auto gemm = [&](const T* w, const T* in, T* o, int c, int n, int k) {
      const cublasStatus_t st =
          cublasGemmEx(cublas, CUBLAS_OP_T, CUBLAS_OP_N, n, c, k, &alpha, w, ab, k, in, ab, k,
                       &beta, o, ab, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
      if (st != CUBLAS_STATUS_SUCCESS)
        throw Error(ErrorCode::kDEVICE,
                    "moe: cublasGemmEx failed with status " + std::to_string(static_cast<int>(st)));
    };
    if (cublasSetStream(cublas, stream) != CUBLAS_STATUS_SUCCESS)
      throw Error(ErrorCode::kDEVICE, "moe: binding cuBLAS to the stream");
    for (int e = 0; e < s.num_experts; ++e) {
      const int c = first[e + 1] - first[e];
      if (c == 0) continue;  // no token chose it: its weights are not read
      gemm(gate_up + static_cast<int64_t>(e) * 2 * f * h, xs + static_cast<int64_t>(first[e]) * h,
           gu + static_cast<int64_t>(first[e]) * 2 * f, c, 2 * f, h);
    }
    silu_mul(dtype, gu, act, pairs, f, stream);
    for (int e = 0; e < s.num_experts; ++e) {
      const int c = first[e + 1] - first[e];
      if (c == 0) continue;
      gemm(down + static_cast<int64_t>(e) * h * f, act + static_cast<int64_t>(first[e]) * f,
           out + static_cast<int64_t>(first[e]) * h, c, h, f);
    }
  }
  launch_kernel("moe_combine_kernel", moe_combine_kernel<T>,
                stream_blocks(static_cast<int64_t>(s.tokens) * (h / 8)), kThreads, 0, stream,
                static_cast<const T*>(out), static_cast<const int32_t*>(experts),
                static_cast<const float*>(weights), static_cast<const int32_t*>(row_of), y,
                s.tokens, s.top_k, h);
}

}  // namespace

void moe_route(DataType logits_dtype, const void* logits, int tokens, int num_experts, int top_k,
               bool normalize_top_k, int32_t* experts, float* weights, cudaStream_t stream) {
  require(logits_dtype == DataType::kFLOAT || logits_dtype == DataType::kBF16 ||
              logits_dtype == DataType::kHALF,
          "moe_route",
          "logits must be f32, bf16 or f16, got " + std::string(dtype_name(logits_dtype)));
  require(num_experts >= 1 && num_experts <= kMoeMaxExperts && top_k >= 1 && top_k <= num_experts &&
              tokens >= 0,
          "moe_route",
          "need tokens >= 0 and 1 <= top_k <= experts <= " + std::to_string(kMoeMaxExperts) +
              ", got tokens " + std::to_string(tokens) + ", experts " +
              std::to_string(num_experts) + ", top_k " + std::to_string(top_k));
  require(tokens == 0 || (logits && experts && weights), "moe_route",
          "logits, experts and weights must be non-null");
  if (tokens == 0) return;
  if (logits_dtype == DataType::kFLOAT)
    launch_route<float>(logits, tokens, num_experts, top_k, normalize_top_k, experts, weights,
                        stream);
  else if (logits_dtype == DataType::kBF16)
    launch_route<bf16>(logits, tokens, num_experts, top_k, normalize_top_k, experts, weights,
                       stream);
  else
    launch_route<fp16>(logits, tokens, num_experts, top_k, normalize_top_k, experts, weights,
                       stream);
}

size_t moe_workspace_bytes(DataType dtype, const MoeShape& shape, MoePath path) {
  check_shape(dtype, shape);
  return layout(dtype, shape, resolve(path, shape)).total;
}

void moe(DataType dtype, const MoeShape& shape, const void* x, const void* router_logits,
         const void* gate_up, const void* down, void* y, void* workspace, size_t workspace_bytes,
         MoePath path, cublasHandle_t cublas, cudaStream_t stream) {
  check_shape(dtype, shape);
  path = resolve(path, shape);
  const Layout l = layout(dtype, shape, path);
  require(workspace_bytes >= l.total && (l.total == 0 || workspace != nullptr), "moe",
          "the workspace holds " + std::to_string(workspace_bytes) + " bytes, " +
              std::to_string(l.total) + " needed (moe_workspace_bytes)");
  if (shape.tokens == 0) return;
  require(x && router_logits && gate_up && down && y, "moe",
          "x, router_logits, gate_up, down and y must be non-null");
  require(
      aligned16(x) && aligned16(gate_up) && aligned16(down) && aligned16(y) && aligned16(workspace),
      "moe", "x, gate_up, down, y and the workspace must be 16-byte aligned");
  auto* ws = static_cast<std::byte*>(workspace);
  if (dtype == DataType::kBF16)
    run_moe<bf16>(shape, static_cast<const bf16*>(x), static_cast<const bf16*>(router_logits),
                  static_cast<const bf16*>(gate_up), static_cast<const bf16*>(down),
                  static_cast<bf16*>(y), ws, l, path, cublas, stream);
  else
    run_moe<fp16>(shape, static_cast<const fp16*>(x), static_cast<const fp16*>(router_logits),
                  static_cast<const fp16*>(gate_up), static_cast<const fp16*>(down),
                  static_cast<fp16*>(y), ws, l, path, cublas, stream);
}

}  // namespace bindery::cuda

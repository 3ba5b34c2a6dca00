// Helpers shared by the CPU kernels: error labels, f32 views of reduced-precision inputs, and
// the strided copy that transpose, slice and concat are built on (coalesced dims, so a
// transpose of two contiguous blocks is a loop of memcpy, not an element-by-element walk).

#include <algorithm>
#include <cstring>

#include "bindery/error.h"
#include "core/half.h"
#include "core/parallel.h"
#include "runtime/cpu/kernel_common.h"

namespace bindery::cpu::detail {

std::string node_label(const GraphNode& node) {
  return "node '" + node.name + "' (" + std::string(layer_type_name(node.type)) + ")";
}

void unsupported(const GraphNode& node, const std::string& what) {
  throw Error(ErrorCode::kUNSUPPORTED, node_label(node) + ": " + what);
}

void widen_f32(DataType from, const void* src, float* dst, int64_t n) {
  const int es = dtype_bits(from) / 8;
  const auto* s = static_cast<const uint8_t*>(src);
  parallel_for(n, kGrain, [&](int64_t b, int64_t e) { to_f32(from, s + b * es, dst + b, e - b); });
}

const float* as_f32(const GraphNode& node, const TensorRef& t, Scratch& scratch) {
  if (t.dtype == DataType::kFLOAT) return static_cast<const float*>(t.data);
  if (t.dtype != DataType::kHALF && t.dtype != DataType::kBF16)
    unsupported(node,
                "float input expected (f32, f16, bf16), got " + std::string(dtype_name(t.dtype)));
  const int64_t n = numel(t);
  scratch.resize(static_cast<size_t>(n));
  widen_f32(t.dtype, t.data, scratch.data(), n);
  return scratch.data();
}

namespace {
template <class T>
void copy_rows(const Dims& dims, const T* src, const std::vector<int64_t>& ss, T* dst,
               const std::vector<int64_t>& ds) {
  const int64_t inner = dims.back();
  const int64_t si = ss.back(), di = ds.back();
  const Dims outer(dims.begin(), dims.end() - 1);
  std::array<std::vector<int64_t>, 2> strides = {std::vector<int64_t>(ss.begin(), ss.end() - 1),
                                                 std::vector<int64_t>(ds.begin(), ds.end() - 1)};
  int64_t rows = 1;
  for (int64_t d : outer) rows *= d;
  parallel_for(
      rows, std::max<int64_t>(1, kGrain / std::max<int64_t>(inner, 1)), [&](int64_t b, int64_t e) {
        for_each_row<2>(outer, strides, b, e, [&](int64_t, const std::array<int64_t, 2>& off) {
          const T* s = src + off[0];
          T* d = dst + off[1];
          if (si == 1 && di == 1) {
            std::memcpy(d, s, static_cast<size_t>(inner) * sizeof(T));
          } else {
            for (int64_t j = 0; j < inner; ++j) d[j * di] = s[j * si];
          }
        });
      });
}
}  // namespace

void strided_copy(const Dims& dims, const void* src, std::vector<int64_t> src_strides, void* dst,
                  std::vector<int64_t> dst_strides, int elem_bytes) {
  for (int64_t d : dims)
    if (d == 0) return;
  Dims d = dims;
  std::array<std::vector<int64_t>, 2> s = {std::move(src_strides), std::move(dst_strides)};
  coalesce<2>(d, s);
  switch (elem_bytes) {
    case 1:
      return copy_rows(d, static_cast<const uint8_t*>(src), s[0], static_cast<uint8_t*>(dst), s[1]);
    case 2:
      return copy_rows(d, static_cast<const uint16_t*>(src), s[0], static_cast<uint16_t*>(dst),
                       s[1]);
    case 4:
      return copy_rows(d, static_cast<const uint32_t*>(src), s[0], static_cast<uint32_t*>(dst),
                       s[1]);
    case 8:
      return copy_rows(d, static_cast<const uint64_t*>(src), s[0], static_cast<uint64_t*>(dst),
                       s[1]);
  }
  throw Error(ErrorCode::kINTERNAL,
              "strided_copy of " + std::to_string(elem_bytes) + "-byte elements");
}

}  // namespace bindery::cpu::detail

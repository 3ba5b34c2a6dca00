#include "plan/tensor_ops.h"

#include <cstring>

#include "bindery/error.h"
#include "core/half.h"
#include "core/parallel.h"

namespace bindery {

namespace {
int64_t elem_size(DataType t) {
  check(dtype_bits(t) % 8 == 0, ErrorCode::kUNSUPPORTED,
        "layout transform of packed dtype " + std::string(dtype_name(t)));
  return dtype_bits(t) / 8;
}
int64_t prod(const Dims& d, size_t begin, size_t end) {
  int64_t p = 1;
  for (size_t i = begin; i < end; ++i) p *= d[i];
  return p;
}
// Copies `rows` rows of `row_bytes` with strides, over the cores: by rows when there are
// many, within each row when rows are few and long (a concat part along axis 0 is one row).
void copy_rows(std::byte* dst, int64_t dst_stride, const std::byte* src, int64_t src_stride,
               int64_t rows, int64_t row_bytes) {
  if (rows < 2 * num_threads() && row_bytes >= (4 << 20)) {
    for (int64_t r = 0; r < rows; ++r)
      parallel_memcpy(dst + r * dst_stride, src + r * src_stride, row_bytes);
    return;
  }
  parallel_for(rows, std::max<int64_t>(1, (1 << 20) / std::max<int64_t>(row_bytes, 1)),
               [&](int64_t b, int64_t e) {
                 for (int64_t r = b; r < e; ++r)
                   std::memcpy(dst + r * dst_stride, src + r * src_stride, row_bytes);
               });
}
}  // namespace

void write_block(const Weights& part, int axis, int64_t offset, void* whole,
                 const Dims& whole_dims) {
  const int64_t es = elem_size(part.dtype);
  const int64_t outer = prod(whole_dims, 0, axis);
  const int64_t inner = prod(whole_dims, axis + 1, whole_dims.size());
  const int64_t row = part.shape[axis] * inner * es;
  copy_rows(static_cast<std::byte*>(whole) + offset * inner * es, whole_dims[axis] * inner * es,
            static_cast<const std::byte*>(part.values), row, outer, row);
}

void concat_into(std::span<const Weights> parts, int axis, HostTensor& out) {
  int64_t offset = 0;
  for (const Weights& p : parts) {
    write_block(p, axis, offset, out.data(), out.shape());
    offset += p.shape[axis];
  }
}

HostTensor slice_axis(const Weights& in, int axis, int64_t start, int64_t length) {
  Dims d = in.shape;
  d[axis] = length;
  HostTensor out(in.dtype, d);
  const int64_t es = elem_size(in.dtype);
  const int64_t outer = prod(in.shape, 0, axis);
  const int64_t inner = prod(in.shape, axis + 1, in.shape.size());
  copy_rows(static_cast<std::byte*>(out.data()), length * inner * es,
            static_cast<const std::byte*>(in.values) + start * inner * es,
            in.shape[axis] * inner * es, outer, length * inner * es);
  return out;
}

HostTensor transpose(const Weights& in, const std::vector<int64_t>& perm) {
  const size_t rank = in.shape.size();
  Dims od(rank);
  for (size_t i = 0; i < rank; ++i) od[i] = in.shape[perm[i]];
  HostTensor out(in.dtype, od);
  const int64_t es = elem_size(in.dtype);
  const auto is = contiguous_strides(in.shape);
  std::vector<int64_t> src_stride(rank);  // stride in the input of each output dim
  for (size_t i = 0; i < rank; ++i) src_stride[i] = is[perm[i]];
  const int64_t n = out.count();
  const int64_t last = rank ? od[rank - 1] : 1;
  const int64_t rows = last ? n / last : 0;
  const auto* src = static_cast<const std::byte*>(in.values);
  auto* dst = static_cast<std::byte*>(out.data());
  parallel_for(rows, 64, [&](int64_t b, int64_t e) {
    std::vector<int64_t> idx(rank, 0);
    for (int64_t r = b; r < e; ++r) {
      int64_t rem = r, off = 0;
      for (int i = static_cast<int>(rank) - 2; i >= 0; --i) {
        idx[i] = rem % od[i];
        rem /= od[i];
        off += idx[i] * src_stride[i];
      }
      const int64_t s_last = rank ? src_stride[rank - 1] : 1;
      std::byte* d = dst + r * last * es;
      for (int64_t j = 0; j < last; ++j) std::memcpy(d + j * es, src + (off + j * s_last) * es, es);
    }
  });
  return out;
}

HostTensor cast(const Weights& in, DataType to) {
  HostTensor out(to, in.shape);
  const int64_t n = in.count();
  const int64_t ies = dtype_bits(in.dtype) / 8, oes = dtype_bits(to) / 8;
  parallel_for(n, 1 << 16, [&](int64_t b, int64_t e) {
    convert_floats(in.dtype, static_cast<const std::byte*>(in.values) + b * ies, to,
                   static_cast<std::byte*>(out.data()) + b * oes, e - b);
  });
  return out;
}

}  // namespace bindery

// Data movement: gather, reshape, transpose, concat, slice. Any dtype but int4.
//
// Transpose, slice and concat are one strided copy each (source strides permuted, scaled by
// the slice step, or destination offset along the concat axis); the copy merges dims that
// both sides walk contiguously, so the common cases are loops of memcpy. Gather copies whole
// rows (an embedding lookup is one memcpy per token), widening f16/bf16 rows to f32 on the
// way as infer_outputs says. Slice steps are positive only (infer_outputs rejects others).

#include <cstring>

#include "bindery/error.h"
#include "core/half.h"
#include "core/parallel.h"
#include "runtime/cpu/kernel_common.h"

namespace bindery::cpu::detail {

namespace {
int elem_bytes(DataType t) { return dtype_bits(t) / 8; }

template <class Index>
void check_indices(const GraphNode& node, const Index* idx, int64_t n, int64_t offset,
                   int64_t bound, int axis) {
  for (int64_t i = 0; i < n; ++i) {
    const int64_t v = static_cast<int64_t>(idx[i]);
    if (v < offset || v >= offset + bound)
      throw Error(ErrorCode::kINVALID_ARGUMENT,
                  node_label(node) + ": index " + std::to_string(v) + " at position " +
                      std::to_string(i) + " is out of range [" + std::to_string(offset) + ", " +
                      std::to_string(offset + bound) + ") of data dim " + std::to_string(axis));
  }
}
}  // namespace

void run_gather(const GraphNode& node, Inputs in, const TensorRef& out) {
  const TensorRef& data = in[0];
  const TensorRef& indices = in[1];
  const Dims& d = data.dims;
  const GatherParams& p = std::get<GatherParams>(node.params);
  const int axis = p.axis < 0 ? p.axis + static_cast<int>(d.size()) : p.axis;
  const int64_t outer = volume(Dims(d.begin(), d.begin() + axis));
  const int64_t len = d[axis];
  const int64_t inner = volume(Dims(d.begin() + axis + 1, d.end()));
  const int64_t n = numel(indices);
  const bool i64 = indices.dtype == DataType::kINT64;
  if (!p.zero_out_of_range) {
    if (i64)
      check_indices(node, static_cast<const int64_t*>(indices.data), n, p.index_offset, len, axis);
    else
      check_indices(node, static_cast<const int32_t*>(indices.data), n, p.index_offset, len, axis);
  }
  // The row of `data` index j reads, or -1 for one outside (zero_out_of_range).
  const auto index = [&](int64_t j) -> int64_t {
    const int64_t v = (i64 ? static_cast<const int64_t*>(indices.data)[j]
                           : static_cast<const int32_t*>(indices.data)[j]) -
                      p.index_offset;
    return v >= 0 && v < len ? v : -1;
  };
  const bool widen = data.dtype != out.dtype;  // f16/bf16 -> f32
  const int es = elem_bytes(data.dtype), out_es = elem_bytes(out.dtype);
  const auto* src = static_cast<const uint8_t*>(data.data);
  auto* dst = static_cast<uint8_t*>(out.data);
  parallel_for(outer * n, std::max<int64_t>(1, kGrain / std::max<int64_t>(inner, 1)),
               [&](int64_t b, int64_t e) {
                 for (int64_t r = b; r < e; ++r) {
                   const int64_t o = r / n, row = index(r % n);
                   uint8_t* t = dst + r * inner * out_es;
                   if (row < 0) {
                     std::memset(t, 0, static_cast<size_t>(inner * out_es));
                     continue;
                   }
                   const uint8_t* s = src + ((o * len + row) * inner) * es;
                   if (widen)
                     to_f32(data.dtype, s, reinterpret_cast<float*>(t), inner);
                   else
                     std::memcpy(t, s, static_cast<size_t>(inner * es));
                 }
               });
}

void run_reshape(const GraphNode& node, Inputs in, const TensorRef& out) {
  if (out.data == in[0].data) return;  // the runtime may alias a reshape to its input
  std::memcpy(out.data, in[0].data, static_cast<size_t>(dtype_bytes(out.dtype, numel(out))));
}

void run_transpose(const GraphNode& node, Inputs in, const TensorRef& out) {
  const auto& perm = std::get<TransposeParams>(node.params).perm;
  const std::vector<int64_t> cs = contiguous_strides(in[0].dims);
  std::vector<int64_t> src_strides(perm.size());
  for (size_t k = 0; k < perm.size(); ++k) src_strides[k] = cs[perm[k]];
  strided_copy(out.dims, in[0].data, std::move(src_strides), out.data, contiguous_strides(out.dims),
               elem_bytes(out.dtype));
}

void run_concat(const GraphNode& node, Inputs in, const TensorRef& out) {
  const int rank = static_cast<int>(out.dims.size());
  int axis = std::get<ConcatParams>(node.params).axis;
  if (axis < 0) axis += rank;
  const std::vector<int64_t> os = contiguous_strides(out.dims);
  const int es = elem_bytes(out.dtype);
  int64_t offset = 0;
  for (const TensorRef& t : in) {
    auto* dst = static_cast<uint8_t*>(out.data) + offset * os[axis] * es;
    strided_copy(t.dims, t.data, contiguous_strides(t.dims), dst, os, es);
    offset += t.dims[axis];
  }
}

void run_slice(const GraphNode& node, Inputs in, const TensorRef& out) {
  const auto& p = std::get<SliceParams>(node.params);
  const std::vector<int64_t> cs = contiguous_strides(in[0].dims);
  const int es = elem_bytes(out.dtype);
  int64_t offset = 0;
  std::vector<int64_t> src_strides(cs.size());
  for (size_t d = 0; d < cs.size(); ++d) {
    offset += p.start[d] * cs[d];
    src_strides[d] = cs[d] * (p.stride.empty() ? 1 : p.stride[d]);
  }
  if (numel(out) == 0) return;
  strided_copy(out.dims, static_cast<const uint8_t*>(in[0].data) + offset * es,
               std::move(src_strides), out.data, contiguous_strides(out.dims), es);
}

}  // namespace bindery::cpu::detail

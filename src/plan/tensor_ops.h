#pragma once
// Layout transforms on whole host tensors, used by recipes: the builder and the refitter run
// exactly these, so a refit slot is bit-identical to a freshly built one.

#include <vector>

#include "bindery/weights.h"

namespace bindery {

/// Concatenates along `axis` (all other dims equal) into `out` (preallocated).
void concat_into(std::span<const Weights> parts, int axis, HostTensor& out);
/// Copies `part` into `whole` at offset `offset` along `axis` (the inverse view of a concat).
void write_block(const Weights& part, int axis, int64_t offset, void* whole,
                 const Dims& whole_dims);
/// Elements [start, start+length) along `axis`.
HostTensor slice_axis(const Weights& in, int axis, int64_t start, int64_t length);
/// out.dims[i] = in.dims[perm[i]].
HostTensor transpose(const Weights& in, const std::vector<int64_t>& perm);
/// Float casts (f32/f16/bf16) and same-type copies.
HostTensor cast(const Weights& in, DataType to);

}  // namespace bindery

#pragma once
// Copies a StoredTensor into contiguous memory, gathering strided elements and converting the
// element type on the way. Shared by CheckpointReader::read and read_into.

#include <optional>
#include <string>

#include "bindery/dtype.h"
#include "bindery/io/stored_tensor.h"

namespace bindery::io {

/// Whether `from` converts to `to`: floats to floats, integers to integers, bool to bool and to
/// integers. Same-width copies always do.
bool can_convert(ElementType from, DataType to);
/// Bytes `t` occupies once converted to `as` (its own type when nullopt).
int64_t converted_bytes(const StoredTensor& t, std::optional<DataType> as);
/// Writes `t` contiguously to `dst` (which holds converted_bytes(t, as)). Runs on the calling
/// thread. kDTYPE_MISMATCH when an integer does not fit the target type; names the tensor.
void copy_converted(const StoredTensor& t, void* dst, std::optional<DataType> as);

}  // namespace bindery::io

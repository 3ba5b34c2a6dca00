#pragma once
// The engine of CheckpointReader::read_into: many tensors into caller buffers, in parallel.

#include <optional>
#include <span>

#include "bindery/io/checkpoint_reader.h"

namespace bindery::io {

struct BulkCopy {
  const StoredTensor* tensor;
  void* dst;
  std::optional<DataType> as;
};

/// Copies every tensor (validated by the caller) into its buffer. Plain file regions are read
/// with pread in 16 MiB chunks; strided or converted tensors are copied from the mapping.
void bulk_read(std::span<const BulkCopy> copies, const ReadOptions& options);

}  // namespace bindery::io

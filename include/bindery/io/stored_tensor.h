#pragma once
// StoredTensor: one tensor as a checkpoint file holds it, described in place. `data` points
// into the reader's memory map (or, for a compressed zip record, a buffer the reader owns) and
// stays valid for as long as the reader that produced it lives, moves included.

#include <cstdint>
#include <string>

#include "bindery/dims.h"
#include "bindery/io/element_type.h"

namespace bindery::io {

struct StoredTensor {
  std::string name;
  ElementType dtype = ElementType::kF32;
  Dims shape;
  Dims strides;                     // in elements, one per dim; row-major for safetensors
  const std::byte* data = nullptr;  // the element at index 0 (storage + offset)
  std::string file;                 // path of the file that holds it
  int64_t file_offset = -1;  // byte offset of `data` in `file`; -1 when not a plain file region

  int64_t count() const { return volume(shape); }
  /// Bytes of the tensor packed contiguously (count × element size).
  int64_t size_bytes() const { return count() * element_size(dtype); }
  /// Row-major with no gaps (always true for 0 or 1 elements).
  bool is_contiguous() const;
};

/// Row-major strides for `shape`, in elements.
Dims contiguous_strides(const Dims& shape);

}  // namespace bindery::io

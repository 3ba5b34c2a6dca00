#include "bindery/io/stored_tensor.h"

namespace bindery::io {

Dims contiguous_strides(const Dims& shape) {
  Dims strides(shape.size(), 1);
  for (size_t i = shape.size(); i-- > 1;) strides[i - 1] = strides[i] * shape[i];
  return strides;
}

bool StoredTensor::is_contiguous() const {
  if (count() <= 1) return true;
  int64_t expected = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    if (shape[i] == 1) continue;  // the stride of a size-1 dim never matters
    if (strides[i] != expected) return false;
    expected *= shape[i];
  }
  return true;
}

}  // namespace bindery::io

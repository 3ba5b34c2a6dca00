#pragma once
// TensorDesc: a tensor's dtype and dims (dims may hold kDYNAMIC).

#include <string>

#include "bindery/dims.h"
#include "bindery/dtype.h"

namespace bindery {

struct TensorDesc {
  DataType dtype = DataType::kFLOAT;
  Dims dims;
  bool operator==(const TensorDesc&) const = default;
};

/// "f32[2, 3]".
inline std::string to_string(const TensorDesc& d) {
  return std::string(dtype_name(d.dtype)) + to_string(d.dims);
}

}  // namespace bindery

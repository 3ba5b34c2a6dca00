#pragma once
// Tensor shapes. A dimension of -1 is dynamic (known only when an execution context sets the
// input shape), as in TensorRT.

#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

namespace bindery {

inline constexpr int64_t kDYNAMIC = -1;

using Dims = std::vector<int64_t>;

/// Number of elements; 1 for a scalar (empty dims). Throws kINVALID_ARGUMENT on dynamic dims.
int64_t volume(const Dims& d);
/// True if any dimension is kDYNAMIC.
bool is_dynamic(const Dims& d);
/// "[2, 3, -1]".
std::string to_string(const Dims& d);
/// Row-major strides in elements.
std::vector<int64_t> contiguous_strides(const Dims& d);

}  // namespace bindery

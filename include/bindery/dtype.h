#pragma once
// Element types of tensors and weights. Names mirror TensorRT's DataType.

#include <cstdint>
#include <optional>
#include <string_view>

namespace bindery {

enum class DataType : uint8_t {
  kFLOAT = 0,  // f32
  kHALF,       // f16 (IEEE binary16)
  kBF16,       // bfloat16
  kINT8,
  kUINT8,
  kINT32,
  kINT64,
  kBOOL,  // one byte, 0 or 1
  kINT4,  // packed signed int4, two per byte, low nibble first
};

/// Short stable name used in plans, the CLI and messages: "f32", "f16", "bf16", "i8", "u8",
/// "i32", "i64", "bool", "int4".
std::string_view dtype_name(DataType t);
/// Inverse of dtype_name; also accepts "float32", "float16", "bfloat16". nullopt if unknown.
std::optional<DataType> parse_dtype(std::string_view name);
/// Bits per element (4 for kINT4).
int dtype_bits(DataType t);
/// Bytes needed for `count` elements (rounded up for packed types).
int64_t dtype_bytes(DataType t, int64_t count);
bool is_floating(DataType t);
bool is_integer(DataType t);

}  // namespace bindery

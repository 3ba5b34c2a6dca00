#pragma once
// Element types as checkpoint files store them. A superset of bindery::DataType: checkpoints
// hold f64, i16 and fp8 tensors that engines never compute in, so readers keep the file's
// type and convert on request (CheckpointReader::read).

#include <cstdint>
#include <optional>
#include <string_view>

#include "bindery/dtype.h"

namespace bindery::io {

enum class ElementType : uint8_t {
  kF64,
  kF32,
  kF16,
  kBF16,
  kF8_E4M3,  // float8 e4m3fn (no infinities, one NaN pattern)
  kF8_E5M2,
  kI64,
  kI32,
  kI16,
  kI8,
  kU8,
  kBOOL,
};

/// The safetensors spelling: "F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2", "I64", "I32",
/// "I16", "I8", "U8", "BOOL".
std::string_view element_type_name(ElementType t);
/// Inverse of element_type_name (exact, case-sensitive as the format specifies).
std::optional<ElementType> parse_element_type(std::string_view name);
/// Bytes per element.
int element_size(ElementType t);
bool is_floating(ElementType t);
/// The bindery type with the same bits, if there is one (f64, i16 and fp8 have none).
std::optional<DataType> to_data_type(ElementType t);
/// The element type with the same bits as `t` (nullopt for packed kINT4).
std::optional<ElementType> to_element_type(DataType t);

}  // namespace bindery::io

#include "bindery/dtype.h"

#include <array>

namespace bindery {
namespace {
struct DtypeInfo {
  DataType type;
  std::string_view name;
  int bits;
};
constexpr std::array<DtypeInfo, 9> kInfo = {{
    {DataType::kFLOAT, "f32", 32},
    {DataType::kHALF, "f16", 16},
    {DataType::kBF16, "bf16", 16},
    {DataType::kINT8, "i8", 8},
    {DataType::kUINT8, "u8", 8},
    {DataType::kINT32, "i32", 32},
    {DataType::kINT64, "i64", 64},
    {DataType::kBOOL, "bool", 8},
    {DataType::kINT4, "int4", 4},
}};
}  // namespace

std::string_view dtype_name(DataType t) {
  for (const auto& i : kInfo)
    if (i.type == t) return i.name;
  return "unknown";
}

std::optional<DataType> parse_dtype(std::string_view name) {
  for (const auto& i : kInfo)
    if (i.name == name) return i.type;
  if (name == "float32" || name == "float") return DataType::kFLOAT;
  if (name == "float16" || name == "half") return DataType::kHALF;
  if (name == "bfloat16") return DataType::kBF16;
  if (name == "int32") return DataType::kINT32;
  if (name == "int64") return DataType::kINT64;
  if (name == "int8") return DataType::kINT8;
  if (name == "uint8") return DataType::kUINT8;
  return std::nullopt;
}

int dtype_bits(DataType t) {
  for (const auto& i : kInfo)
    if (i.type == t) return i.bits;
  return 0;
}

int64_t dtype_bytes(DataType t, int64_t count) { return (count * dtype_bits(t) + 7) / 8; }

bool is_floating(DataType t) {
  return t == DataType::kFLOAT || t == DataType::kHALF || t == DataType::kBF16;
}

bool is_integer(DataType t) {
  return t == DataType::kINT8 || t == DataType::kUINT8 || t == DataType::kINT32 ||
         t == DataType::kINT64 || t == DataType::kINT4;
}

}  // namespace bindery

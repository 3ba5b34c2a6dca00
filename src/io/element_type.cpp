#include "bindery/io/element_type.h"

#include <array>

namespace bindery::io {
namespace {

struct Entry {
  ElementType type;
  std::string_view name;
  int size;
  bool floating;
  std::optional<DataType> data_type;
};

constexpr std::array<Entry, 12> kENTRIES{{
    {ElementType::kF64, "F64", 8, true, std::nullopt},
    {ElementType::kF32, "F32", 4, true, DataType::kFLOAT},
    {ElementType::kF16, "F16", 2, true, DataType::kHALF},
    {ElementType::kBF16, "BF16", 2, true, DataType::kBF16},
    {ElementType::kF8_E4M3, "F8_E4M3", 1, true, std::nullopt},
    {ElementType::kF8_E5M2, "F8_E5M2", 1, true, std::nullopt},
    {ElementType::kI64, "I64", 8, false, DataType::kINT64},
    {ElementType::kI32, "I32", 4, false, DataType::kINT32},
    {ElementType::kI16, "I16", 2, false, std::nullopt},
    {ElementType::kI8, "I8", 1, false, DataType::kINT8},
    {ElementType::kU8, "U8", 1, false, DataType::kUINT8},
    {ElementType::kBOOL, "BOOL", 1, false, DataType::kBOOL},
}};

const Entry& entry(ElementType t) { return kENTRIES[static_cast<size_t>(t)]; }

}  // namespace

std::string_view element_type_name(ElementType t) { return entry(t).name; }

std::optional<ElementType> parse_element_type(std::string_view name) {
  for (const Entry& e : kENTRIES)
    if (e.name == name) return e.type;
  return std::nullopt;
}

int element_size(ElementType t) { return entry(t).size; }
bool is_floating(ElementType t) { return entry(t).floating; }
std::optional<DataType> to_data_type(ElementType t) { return entry(t).data_type; }

std::optional<ElementType> to_element_type(DataType t) {
  for (const Entry& e : kENTRIES)
    if (e.data_type == t) return e.type;
  return std::nullopt;
}

}  // namespace bindery::io

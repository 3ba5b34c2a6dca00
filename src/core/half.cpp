#include "core/half.h"

#include <cstring>
#include <string>

#include "bindery/error.h"

namespace bindery {

namespace {
template <class T>
void widen(const void* src, float* dst, int64_t n) {
  const T* s = static_cast<const T*>(src);
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(s[i]);
}
}  // namespace

void to_f32(DataType from, const void* src, float* dst, int64_t n) {
  switch (from) {
    case DataType::kFLOAT: std::memcpy(dst, src, n * 4); return;
    case DataType::kHALF: {
      const auto* s = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = f16_to_f32(s[i]);
      return;
    }
    case DataType::kBF16: {
      const auto* s = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(s[i]);
      return;
    }
    case DataType::kINT8: return widen<int8_t>(src, dst, n);
    case DataType::kUINT8: return widen<uint8_t>(src, dst, n);
    case DataType::kBOOL: return widen<uint8_t>(src, dst, n);
    case DataType::kINT32: return widen<int32_t>(src, dst, n);
    case DataType::kINT64: return widen<int64_t>(src, dst, n);
    case DataType::kINT4: break;
  }
  throw Error(ErrorCode::kUNSUPPORTED, "to_f32 from " + std::string(dtype_name(from)));
}

void convert_floats(DataType from, const void* src, DataType to, void* dst, int64_t n) {
  if (from == to) {
    std::memcpy(dst, src, dtype_bytes(from, n));
    return;
  }
  check(is_floating(from) && is_floating(to), ErrorCode::kUNSUPPORTED,
        "cast " + std::string(dtype_name(from)) + " -> " + std::string(dtype_name(to)));
  if (from == DataType::kFLOAT) {
    const auto* s = static_cast<const float*>(src);
    auto* d = static_cast<uint16_t*>(dst);
    if (to == DataType::kHALF)
      for (int64_t i = 0; i < n; ++i) d[i] = f32_to_f16(s[i]);
    else
      for (int64_t i = 0; i < n; ++i) d[i] = f32_to_bf16(s[i]);
    return;
  }
  if (to == DataType::kFLOAT) {
    to_f32(from, src, static_cast<float*>(dst), n);
    return;
  }
  // f16 <-> bf16 goes through f32, which is exact for the widening step.
  const auto* s = static_cast<const uint16_t*>(src);
  auto* d = static_cast<uint16_t*>(dst);
  for (int64_t i = 0; i < n; ++i) {
    const float f = from == DataType::kHALF ? f16_to_f32(s[i]) : bf16_to_f32(s[i]);
    d[i] = to == DataType::kHALF ? f32_to_f16(f) : f32_to_bf16(f);
  }
}

}  // namespace bindery

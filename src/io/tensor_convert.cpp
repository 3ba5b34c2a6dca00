#include "io/tensor_convert.h"

#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "bindery/error.h"
#include "core/half.h"

namespace bindery::io {
namespace {

// fp8 decoders by table: 256 entries each, built once. e4m3fn has no infinities and one NaN
// pattern per sign (S.1111.111); e5m2 is IEEE-like (binary16 with the low byte dropped).
float decode_e4m3(uint8_t v) {
  const int sign = v >> 7, exp = (v >> 3) & 0xf, man = v & 0x7;
  float mag;
  if (exp == 0xf && man == 0x7) return std::numeric_limits<float>::quiet_NaN();
  if (exp == 0)
    mag = std::ldexp(static_cast<float>(man), -9);  // subnormal: man / 8 * 2^-6
  else
    mag = std::ldexp(1.0f + man / 8.0f, exp - 7);
  return sign ? -mag : mag;
}

const std::array<float, 256>& fp8_table(ElementType t) {
  static const auto tables = [] {
    std::array<std::array<float, 256>, 2> tabs{};
    for (int i = 0; i < 256; ++i) {
      tabs[0][i] = decode_e4m3(static_cast<uint8_t>(i));
      tabs[1][i] = f16_to_f32(static_cast<uint16_t>(i << 8));
    }
    return tabs;
  }();
  return tables[t == ElementType::kF8_E4M3 ? 0 : 1];
}

float load_float(ElementType t, const std::byte* p) {
  switch (t) {
    case ElementType::kF64: {
      double d;
      std::memcpy(&d, p, 8);
      return static_cast<float>(d);
    }
    case ElementType::kF32: {
      float f;
      std::memcpy(&f, p, 4);
      return f;
    }
    case ElementType::kF16:
    case ElementType::kBF16: {
      uint16_t h;
      std::memcpy(&h, p, 2);
      return t == ElementType::kF16 ? f16_to_f32(h) : bf16_to_f32(h);
    }
    default: return fp8_table(t)[static_cast<uint8_t>(*p)];
  }
}

int64_t load_int(ElementType t, const std::byte* p) {
  switch (t) {
    case ElementType::kI64: {
      int64_t v;
      std::memcpy(&v, p, 8);
      return v;
    }
    case ElementType::kI32: {
      int32_t v;
      std::memcpy(&v, p, 4);
      return v;
    }
    case ElementType::kI16: {
      int16_t v;
      std::memcpy(&v, p, 2);
      return v;
    }
    case ElementType::kI8: return static_cast<int8_t>(*p);
    case ElementType::kBOOL: return *p != std::byte{0} ? 1 : 0;
    default: return static_cast<uint8_t>(*p);
  }
}

void store_float(DataType to, float f, std::byte* p) {
  if (to == DataType::kFLOAT) {
    std::memcpy(p, &f, 4);
    return;
  }
  const uint16_t h = to == DataType::kHALF ? f32_to_f16(f) : f32_to_bf16(f);
  std::memcpy(p, &h, 2);
}

template <class T>
bool store_if_fits(int64_t v, std::byte* p) {
  if (v < std::numeric_limits<T>::min() || v > std::numeric_limits<T>::max()) return false;
  const T x = static_cast<T>(v);
  std::memcpy(p, &x, sizeof(T));
  return true;
}

bool store_int(DataType to, int64_t v, std::byte* p) {
  switch (to) {
    case DataType::kINT64: return store_if_fits<int64_t>(v, p);
    case DataType::kINT32: return store_if_fits<int32_t>(v, p);
    case DataType::kINT8: return store_if_fits<int8_t>(v, p);
    case DataType::kUINT8: return store_if_fits<uint8_t>(v, p);
    default:  // kBOOL, from bool only (can_convert)
      *p = std::byte{static_cast<uint8_t>(v != 0)};
      return true;
  }
}

// Calls fn(element index, source pointer) in row-major order of the logical tensor.
template <class Fn>
void for_each_element(const StoredTensor& t, Fn&& fn) {
  const int64_t n = t.count();
  if (n == 0) return;
  const int64_t esize = element_size(t.dtype);
  const size_t rank = t.shape.size();
  std::vector<int64_t> index(rank, 0);
  int64_t offset = 0;  // in elements
  for (int64_t i = 0; i < n; ++i) {
    fn(i, t.data + offset * esize);
    for (size_t d = rank; d-- > 0;) {  // odometer increment
      if (++index[d] < t.shape[d]) {
        offset += t.strides[d];
        break;
      }
      offset -= t.strides[d] * (t.shape[d] - 1);
      index[d] = 0;
    }
  }
}

}  // namespace

bool can_convert(ElementType from, DataType to) {
  if (to_data_type(from) == to) return true;
  if (to == DataType::kINT4) return false;
  if (is_floating(from)) return bindery::is_floating(to);
  if (to == DataType::kBOOL) return from == ElementType::kBOOL;
  return bindery::is_integer(to);
}

int64_t converted_bytes(const StoredTensor& t, std::optional<DataType> as) {
  return as ? dtype_bytes(*as, t.count()) : t.size_bytes();
}

void copy_converted(const StoredTensor& t, void* dst, std::optional<DataType> as) {
  auto* out = static_cast<std::byte*>(dst);
  const bool same = !as || to_data_type(t.dtype) == as;
  if (same) {
    if (t.is_contiguous()) {
      if (t.size_bytes() > 0) std::memcpy(out, t.data, static_cast<size_t>(t.size_bytes()));
      return;
    }
    const int64_t esize = element_size(t.dtype);
    for_each_element(t, [&](int64_t i, const std::byte* src) {
      std::memcpy(out + i * esize, src, static_cast<size_t>(esize));
    });
    return;
  }
  check(can_convert(t.dtype, *as), ErrorCode::kDTYPE_MISMATCH,
        "cannot convert tensor '" + t.name + "' from " + std::string(element_type_name(t.dtype)) +
            " to " + std::string(dtype_name(*as)) +
            ": only floats to floats and integers to integers");
  const int64_t out_size = dtype_bytes(*as, 1);
  const std::optional<DataType> from = to_data_type(t.dtype);
  if (t.is_contiguous() && from && is_floating(t.dtype)) {  // f32/f16/bf16: the bulk converter
    convert_floats(*from, t.data, *as, out, t.count());
    return;
  }
  if (is_floating(t.dtype)) {
    for_each_element(t, [&](int64_t i, const std::byte* src) {
      store_float(*as, load_float(t.dtype, src), out + i * out_size);
    });
    return;
  }
  for_each_element(t, [&](int64_t i, const std::byte* src) {
    const int64_t v = load_int(t.dtype, src);
    check(store_int(*as, v, out + i * out_size), ErrorCode::kDTYPE_MISMATCH,
          "tensor '" + t.name + "': value " + std::to_string(v) + " at element " +
              std::to_string(i) + " does not fit in " + std::string(dtype_name(*as)));
  });
}

}  // namespace bindery::io

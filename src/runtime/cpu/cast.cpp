// Cast between f32, f16, bf16, i8, u8, i32, i64 and bool: one parallel loop per dtype pair,
// instantiated for all 64 pairs so the inner loop has no dtype branch.
//
// Semantics: float -> float rounds to nearest even (core/half.h, the same conversion the
// refitter's cast recipe uses); float -> int truncates toward zero and saturates at the
// target's range, NaN gives 0; int -> int wraps modulo 2^bits (C++20 conversion); int ->
// f16/bf16 goes through f32; anything -> bool is (x != 0); bool -> anything is 0 or 1.

#include <limits>

#include "core/half.h"
#include "core/parallel.h"
#include "runtime/cpu/kernel_common.h"

namespace bindery::cpu::detail {

namespace {

template <DataType T>
struct Storage;
template <>
struct Storage<DataType::kFLOAT> {
  using type = float;
};
template <>
struct Storage<DataType::kHALF> {
  using type = uint16_t;
};
template <>
struct Storage<DataType::kBF16> {
  using type = uint16_t;
};
template <>
struct Storage<DataType::kINT8> {
  using type = int8_t;
};
template <>
struct Storage<DataType::kUINT8> {
  using type = uint8_t;
};
template <>
struct Storage<DataType::kINT32> {
  using type = int32_t;
};
template <>
struct Storage<DataType::kINT64> {
  using type = int64_t;
};
template <>
struct Storage<DataType::kBOOL> {
  using type = uint8_t;
};

template <DataType T>
constexpr bool kFloat = T == DataType::kFLOAT || T == DataType::kHALF || T == DataType::kBF16;

/// A source element as f32 (float dtypes) or i64 (integer dtypes and bool).
template <DataType T>
auto load(typename Storage<T>::type v) {
  if constexpr (T == DataType::kFLOAT) {
    return v;
  } else if constexpr (T == DataType::kHALF) {
    return f16_to_f32(v);
  } else if constexpr (T == DataType::kBF16) {
    return bf16_to_f32(v);
  } else if constexpr (T == DataType::kBOOL) {
    return static_cast<int64_t>(v != 0);
  } else {
    return static_cast<int64_t>(v);
  }
}

template <class I>
I saturate(float f) {
  if (std::isnan(f)) return 0;
  const double t = std::trunc(static_cast<double>(f));
  if (t <= static_cast<double>(std::numeric_limits<I>::min())) return std::numeric_limits<I>::min();
  if (t >= static_cast<double>(std::numeric_limits<I>::max())) return std::numeric_limits<I>::max();
  return static_cast<I>(t);
}

template <DataType To, class V>
typename Storage<To>::type store(V v) {
  using S = typename Storage<To>::type;
  constexpr bool from_float = std::is_same_v<V, float>;
  if constexpr (To == DataType::kBOOL) {
    return static_cast<S>(v != 0);
  } else if constexpr (To == DataType::kFLOAT) {
    return static_cast<float>(v);
  } else if constexpr (To == DataType::kHALF) {
    return f32_to_f16(static_cast<float>(v));
  } else if constexpr (To == DataType::kBF16) {
    return f32_to_bf16(static_cast<float>(v));
  } else if constexpr (from_float) {
    return saturate<S>(v);
  } else {
    return static_cast<S>(v);
  }
}

template <class F>
void with_dtype(const GraphNode& node, DataType t, F&& f) {
  switch (t) {
    case DataType::kFLOAT: return f.template operator()<DataType::kFLOAT>();
    case DataType::kHALF: return f.template operator()<DataType::kHALF>();
    case DataType::kBF16: return f.template operator()<DataType::kBF16>();
    case DataType::kINT8: return f.template operator()<DataType::kINT8>();
    case DataType::kUINT8: return f.template operator()<DataType::kUINT8>();
    case DataType::kINT32: return f.template operator()<DataType::kINT32>();
    case DataType::kINT64: return f.template operator()<DataType::kINT64>();
    case DataType::kBOOL: return f.template operator()<DataType::kBOOL>();
    case DataType::kINT4: break;
  }
  unsupported(node, "cast of " + std::string(dtype_name(t)));
}

}  // namespace

void run_cast(const GraphNode& node, Inputs in, const TensorRef& out) {
  const int64_t n = numel(out);
  with_dtype(node, in[0].dtype, [&]<DataType From>() {
    with_dtype(node, out.dtype, [&]<DataType To>() {
      const auto* s = static_cast<const typename Storage<From>::type*>(in[0].data);
      auto* d = static_cast<typename Storage<To>::type*>(out.data);
      parallel_for(n, kGrain, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) d[i] = store<To>(load<From>(s[i]));
      });
    });
  });
}

}  // namespace bindery::cpu::detail

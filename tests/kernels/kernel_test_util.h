#pragma once
// Helpers for the CPU kernel tests: owned host buffers in any dtype, random data rounded to
// the buffer's dtype, and running one node through run_node with outputs sized by
// infer_outputs.

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "bindery/ops.h"
#include "core/half.h"
#include "runtime/cpu/kernels.h"

namespace bindery::test {

/// An owned host tensor. `absent` marks an absent optional input (data nullptr).
struct Buf {
  DataType dtype = DataType::kFLOAT;
  Dims dims;
  std::vector<uint8_t> bytes;
  bool absent = false;

  Buf() = default;
  Buf(DataType t, Dims d) : dtype(t), dims(std::move(d)) {
    bytes.resize(static_cast<size_t>(dtype_bytes(dtype, volume(dims))));
  }
  static Buf none() {
    Buf b;
    b.absent = true;
    return b;
  }
  int64_t count() const { return volume(dims); }
  cpu::TensorRef ref() const {
    return {dtype, dims, absent ? nullptr : const_cast<uint8_t*>(bytes.data())};
  }
  template <class T>
  T* as() {
    return reinterpret_cast<T*>(bytes.data());
  }
  template <class T>
  const T* as() const {
    return reinterpret_cast<const T*>(bytes.data());
  }
  /// Every element as double (exact for every dtype but i64 beyond 2^53).
  std::vector<double> values() const {
    std::vector<double> v(static_cast<size_t>(count()));
    if (dtype == DataType::kINT64) {
      for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<double>(as<int64_t>()[i]);
      return v;
    }
    std::vector<float> f(v.size());
    to_f32(dtype, bytes.data(), f.data(), count());
    for (size_t i = 0; i < v.size(); ++i) v[i] = f[i];
    return v;
  }
  /// Stores `x` into element i, rounding to the dtype (round to nearest even for floats).
  void set(int64_t i, double x) {
    switch (dtype) {
      case DataType::kFLOAT: as<float>()[i] = static_cast<float>(x); return;
      case DataType::kHALF: as<uint16_t>()[i] = f32_to_f16(static_cast<float>(x)); return;
      case DataType::kBF16: as<uint16_t>()[i] = f32_to_bf16(static_cast<float>(x)); return;
      case DataType::kINT8: as<int8_t>()[i] = static_cast<int8_t>(x); return;
      case DataType::kUINT8: as<uint8_t>()[i] = static_cast<uint8_t>(x); return;
      case DataType::kINT32: as<int32_t>()[i] = static_cast<int32_t>(x); return;
      case DataType::kINT64: as<int64_t>()[i] = static_cast<int64_t>(x); return;
      case DataType::kBOOL: as<uint8_t>()[i] = x != 0.0; return;
      case DataType::kINT4: break;
    }
  }
};

inline Buf from_values(DataType t, Dims d, const std::vector<double>& v) {
  Buf b(t, std::move(d));
  for (int64_t i = 0; i < b.count(); ++i) b.set(i, v[static_cast<size_t>(i)]);
  return b;
}

/// Uniform random values in [lo, hi), rounded to `t` (integers: truncated).
inline Buf random_buf(DataType t, Dims d, std::mt19937& rng, double lo = -1.0, double hi = 1.0) {
  Buf b(t, std::move(d));
  std::uniform_real_distribution<double> dist(lo, hi);
  for (int64_t i = 0; i < b.count(); ++i) b.set(i, dist(rng));
  return b;
}

inline GraphNode make_node(LayerType type, LayerParams params, std::string name = "n") {
  GraphNode n;
  n.name = std::move(name);
  n.type = type;
  n.params = std::move(params);
  return n;
}

/// Runs `node` on `inputs`; the output is allocated from infer_outputs.
inline Buf run(const GraphNode& node, const std::vector<Buf>& inputs) {
  std::vector<TensorDesc> descs;
  std::vector<cpu::TensorRef> refs;
  for (const Buf& b : inputs) {
    descs.push_back(b.absent ? kABSENT_DESC : TensorDesc{b.dtype, b.dims});
    refs.push_back(b.ref());
  }
  const auto out_desc = infer_outputs(node.type, node.params, descs);
  Buf out(out_desc.at(0).dtype, out_desc.at(0).dims);
  const cpu::TensorRef out_ref = out.ref();
  cpu::run_node(node, refs, std::span(&out_ref, 1));
  return out;
}

inline bool bitwise_equal(const Buf& a, const Buf& b) {
  return a.dtype == b.dtype && a.dims == b.dims && a.bytes == b.bytes;
}

/// Row-major multi-index of flat index `i` in `dims`.
inline std::vector<int64_t> unravel(int64_t i, const Dims& dims) {
  std::vector<int64_t> idx(dims.size());
  for (size_t d = dims.size(); d-- > 0;) {
    idx[d] = dims[d] == 0 ? 0 : i % dims[d];
    i = dims[d] == 0 ? 0 : i / dims[d];
  }
  return idx;
}

/// Flat index in `dims` of the trailing-aligned multi-index `idx` (numpy broadcasting: dims of
/// size 1 read index 0).
inline int64_t ravel_broadcast(const std::vector<int64_t>& idx, const Dims& dims) {
  int64_t flat = 0;
  const size_t lead = idx.size() - dims.size();
  for (size_t d = 0; d < dims.size(); ++d)
    flat = flat * dims[d] + (dims[d] == 1 ? 0 : idx[lead + d]);
  return flat;
}

}  // namespace bindery::test

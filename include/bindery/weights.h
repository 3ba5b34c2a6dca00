#pragma once
// Weights: a borrowed, typed, shaped view of memory on the host or a device. The caller owns
// the memory and keeps it alive for as long as the API that took the view says (e.g. until
// Builder::build returns, or until Refitter::refit returns).
//
// HostTensor: owned, 256-byte-aligned host memory with a dtype and shape; `view()` lends it.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "bindery/device.h"
#include "bindery/dims.h"
#include "bindery/dtype.h"
#include "bindery/tensor_desc.h"

namespace bindery {

struct Weights {
  DataType dtype = DataType::kFLOAT;
  Dims shape;
  const void* values = nullptr;
  Device location = Device::cpu();

  Weights() = default;
  Weights(DataType t, Dims s, const void* v, Device loc = Device::cpu())
      : dtype(t), shape(std::move(s)), values(v), location(loc) {}

  int64_t count() const { return volume(shape); }
  int64_t size_bytes() const { return dtype_bytes(dtype, count()); }
  bool on_host() const { return location.is_cpu(); }
  std::span<const std::byte> bytes() const {
    return {static_cast<const std::byte*>(values), static_cast<size_t>(size_bytes())};
  }
  template <class T>
  const T* data() const {
    return static_cast<const T*>(values);
  }
  TensorDesc desc() const { return {dtype, shape}; }
};

/// "f32[2, 3] (24 B, cpu)", used in messages.
std::string describe(const Weights& w);

class HostTensor {
 public:
  HostTensor() = default;
  /// Allocates uninitialised memory for `shape` elements of `dtype`.
  HostTensor(DataType dtype, Dims shape);
  /// Copies a host view.
  static HostTensor copy_of(const Weights& w);
  /// Allocates zero-filled memory.
  static HostTensor zeros(DataType dtype, Dims shape);

  DataType dtype() const { return dtype_; }
  const Dims& shape() const { return shape_; }
  int64_t count() const { return volume(shape_); }
  int64_t size_bytes() const { return dtype_bytes(dtype_, count()); }
  void* data() { return data_.get(); }
  const void* data() const { return data_.get(); }
  template <class T>
  T* data_as() {
    return static_cast<T*>(data());
  }
  template <class T>
  const T* data_as() const {
    return static_cast<const T*>(data());
  }
  Weights view() const { return Weights(dtype_, shape_, data_.get()); }
  TensorDesc desc() const { return {dtype_, shape_}; }
  /// Changes the shape without touching the data (same element count required).
  void reshape(Dims shape);
  bool empty() const { return !data_; }

 private:
  struct Free {
    void operator()(void* p) const;
  };
  DataType dtype_ = DataType::kFLOAT;
  Dims shape_;
  std::unique_ptr<void, Free> data_;
};

}  // namespace bindery

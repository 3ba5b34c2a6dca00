#include "bindery/weights.h"

#include <cstdlib>
#include <cstring>
#include <new>

#include "bindery/error.h"

namespace bindery {

std::string Device::to_string() const {
  return type == DeviceType::kCPU ? "cpu" : "cuda:" + std::to_string(index);
}

std::string describe(const Weights& w) {
  return std::string(dtype_name(w.dtype)) + to_string(w.shape) + " (" +
         std::to_string(is_dynamic(w.shape) ? -1 : w.size_bytes()) + " B, " +
         w.location.to_string() + ")";
}

void HostTensor::Free::operator()(void* p) const { std::free(p); }

HostTensor::HostTensor(DataType dtype, Dims shape) : dtype_(dtype), shape_(std::move(shape)) {
  const int64_t bytes = size_bytes();
  // 256-byte alignment matches the plan blob, so slots and staging buffers share one layout.
  const size_t rounded = static_cast<size_t>((bytes + 255) / 256 * 256);
  void* p = std::aligned_alloc(256, rounded == 0 ? 256 : rounded);
  if (!p) throw std::bad_alloc();
  data_.reset(p);
}

HostTensor HostTensor::copy_of(const Weights& w) {
  check(w.on_host(), ErrorCode::kDEVICE,
        "HostTensor::copy_of needs a host view, got " + describe(w));
  HostTensor t(w.dtype, w.shape);
  if (t.size_bytes()) std::memcpy(t.data(), w.values, t.size_bytes());
  return t;
}

HostTensor HostTensor::zeros(DataType dtype, Dims shape) {
  HostTensor t(dtype, std::move(shape));
  std::memset(t.data(), 0, t.size_bytes());
  return t;
}

void HostTensor::reshape(Dims shape) {
  check(volume(shape) == count(), ErrorCode::kSHAPE_MISMATCH,
        "reshape " + to_string(shape_) + " -> " + to_string(shape) + " changes the element count");
  shape_ = std::move(shape);
}

}  // namespace bindery
